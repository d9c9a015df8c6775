// Anchor for the servers' LibTorch precompiled header (see services/CMakeLists.txt).
