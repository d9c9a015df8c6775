#include "learner/state_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/util/crc32c.h"
#include "core/util/file_util.h"

namespace rlhf::learner {
namespace {

constexpr size_t kHeaderBytes = 4 + 4 + 8;
// A record larger than this is corruption, not data (a lease of 64 prompts with 16
// samples of 4k tokens each is ~40 MB).
constexpr uint32_t kMaxRecordBytes = 1u << 30;

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
uint64_t GetLE(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// ENOSPC/EDQUOT are a full disk (RESOURCE_EXHAUSTED), everything else UNAVAILABLE: both
// retriable for a caller, who changes nothing.
absl::Status IoError(const std::string& what, int err) {
  const std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  return absl::UnavailableError(msg);
}

}  // namespace

FileStateStore::FileStateStore(std::string path)
    : FileStateStore(FileStateStoreOptions{std::move(path), nullptr}) {}

FileStateStore::FileStateStore(FileStateStoreOptions options)
    : options_(std::move(options)), log_path_(options_.path + ".log") {}

FileStateStore::~FileStateStore() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
}

absl::Status FileStateStore::OpenLogLocked() {
  if (fd_ >= 0) return absl::OkStatus();
  fd_ = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) return IoError(absl::StrCat("opening ", log_path_), errno);
  // Appends go after the whole records (a torn tail, if any, is overwritten).
  if (::lseek(fd_, size_, SEEK_SET) < 0 || ::ftruncate(fd_, size_) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    return IoError(absl::StrCat("positioning ", log_path_), err);
  }
  return absl::OkStatus();
}

absl::Status FileStateStore::Write(const rlhf::v1::LearnerState& state) {
  absl::MutexLock lock(&mu_);
  if (!broken_.ok()) return broken_;
  std::string bytes;
  if (!state.SerializeToString(&bytes)) return absl::InternalError("serializing learner state");
  if (absl::Status s = WriteFileAtomically(options_.path, bytes, kDurable); !s.ok()) return s;
  // The snapshot is durable and includes every record appended so far.
  durable_ = appended_;
  synced_.SignalAll();
  if (absl::Status s = OpenLogLocked(); !s.ok()) return s;
  // A crash before this truncation leaves records the snapshot's log_seq skips.
  if (::ftruncate(fd_, 0) != 0 || ::lseek(fd_, 0, SEEK_SET) < 0) {
    broken_ = IoError(absl::StrCat("truncating ", log_path_), errno);
    return broken_;
  }
  size_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<rlhf::v1::LearnerState>> FileStateStore::Read() {
  std::ifstream in(options_.path, std::ios::binary);
  if (!in) return std::optional<rlhf::v1::LearnerState>();
  std::stringstream ss;
  ss << in.rdbuf();
  rlhf::v1::LearnerState state;
  if (!state.ParseFromString(ss.str())) {
    return absl::DataLossError(absl::StrCat(options_.path, ": not a valid LearnerState"));
  }
  absl::MutexLock lock(&mu_);
  appended_ = std::max(appended_, state.log_seq());
  durable_ = std::max(durable_, state.log_seq());
  return std::optional<rlhf::v1::LearnerState>(std::move(state));
}

absl::StatusOr<std::vector<rlhf::v1::LearnerLogRecord>> FileStateStore::ReadLog() {
  std::vector<rlhf::v1::LearnerLogRecord> records;
  std::ifstream in(log_path_, std::ios::binary);
  std::string data;
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    data = ss.str();
  }
  size_t pos = 0;
  while (data.size() - pos >= kHeaderBytes) {
    const uint32_t length = static_cast<uint32_t>(GetLE(data.data() + pos, 4));
    const uint32_t crc = static_cast<uint32_t>(GetLE(data.data() + pos + 4, 4));
    if (length > kMaxRecordBytes || data.size() - pos - kHeaderBytes < length) break;
    const absl::string_view body(data.data() + pos + 8, 8 + length);  // seq + payload
    if (Crc32c(body) != crc) break;
    rlhf::v1::LearnerLogRecord record;
    if (!record.ParseFromArray(data.data() + pos + kHeaderBytes, static_cast<int>(length))) {
      break;
    }
    record.set_seq(static_cast<int64_t>(GetLE(data.data() + pos + 8, 8)));
    records.push_back(std::move(record));
    pos += kHeaderBytes + length;
  }
  absl::MutexLock lock(&mu_);
  // What follows the last whole record was never acknowledged: the next append cuts it.
  size_ = static_cast<int64_t>(pos);
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  for (const auto& r : records) {
    appended_ = std::max(appended_, r.seq());
    durable_ = std::max(durable_, r.seq());
  }
  return records;
}

absl::StatusOr<int64_t> FileStateStore::Append(const rlhf::v1::LearnerLogRecord& record) {
  std::string payload;
  if (!record.SerializeToString(&payload)) return absl::InternalError("serializing a log record");
  absl::MutexLock lock(&mu_);
  if (!broken_.ok()) return broken_;
  if (absl::Status s = OpenLogLocked(); !s.ok()) return s;
  const int64_t seq = appended_ + 1;
  std::string frame;
  frame.reserve(kHeaderBytes + payload.size());
  std::string body;
  PutU64(&body, static_cast<uint64_t>(seq));
  body += payload;
  PutU32(&frame, static_cast<uint32_t>(payload.size()));
  PutU32(&frame, Crc32c(body));
  frame += body;
  size_t written = 0;
  while (written < frame.size()) {
    const ssize_t n = ::write(fd_, frame.data() + written, frame.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      // Cut the partial record so that the next one follows the last whole record.
      if (::ftruncate(fd_, size_) != 0 || ::lseek(fd_, size_, SEEK_SET) < 0) {
        broken_ = IoError(absl::StrCat("cutting a partial record from ", log_path_), errno);
      }
      return IoError(absl::StrCat("appending to ", log_path_), err);
    }
    written += static_cast<size_t>(n);
  }
  size_ += static_cast<int64_t>(frame.size());
  appended_ = seq;
  return seq;
}

absl::Status FileStateStore::Sync(int64_t seq) {
  while (true) {
    int fd = -1;
    int64_t target = 0;
    {
      absl::MutexLock lock(&mu_);
      while (syncing_ && durable_ < seq && broken_.ok()) synced_.Wait(&mu_);
      if (durable_ >= seq) return absl::OkStatus();
      if (!broken_.ok()) return broken_;
      // Leader: one fdatasync covers every record appended so far, for every waiter.
      syncing_ = true;
      target = appended_;
      fd = fd_;
    }
    const int rc = options_.sync_fn ? options_.sync_fn(fd) : ::fdatasync(fd);
    const int err = errno;
    absl::MutexLock lock(&mu_);
    syncing_ = false;
    ++syncs_;
    if (rc != 0) {
      broken_ = IoError(absl::StrCat("fdatasync of ", log_path_,
                                     " failed (the learner must restart and recover)"),
                        err);
    } else {
      durable_ = std::max(durable_, target);
    }
    synced_.SignalAll();
  }
}

int64_t FileStateStore::last_seq() const {
  absl::MutexLock lock(&mu_);
  return appended_;
}

int64_t FileStateStore::log_bytes() const {
  absl::MutexLock lock(&mu_);
  return size_;
}

absl::Status FileStateStore::health() const {
  absl::MutexLock lock(&mu_);
  return broken_;
}

int64_t FileStateStore::syncs() const {
  absl::MutexLock lock(&mu_);
  return syncs_;
}

}  // namespace rlhf::learner
