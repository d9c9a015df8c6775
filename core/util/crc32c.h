// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4
// and LevelDB's log: detects a torn or corrupted record in an append-only file.
// Crc32c("123456789") == 0xE3069283 (the standard check value).
//
// Thread-safety: a pure function.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace rlhf {

uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);

}  // namespace rlhf
