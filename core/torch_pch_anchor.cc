// Anchor for the shared LibTorch precompiled header (see core/CMakeLists.txt).
