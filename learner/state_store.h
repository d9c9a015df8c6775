// Where the LearnerHandler's state survives a crash: a snapshot of the whole state plus
// an append-only log of the hot path's records (register, lease, submit, release)
// written since that snapshot.
//
// Why a log: a lease or a submission changes a few entries of a state that holds every
// buffered trajectory. Writing the whole state (and two fsyncs) per call under the
// handler's mutex serialised every actor behind the disk. Now a call appends one small
// record under the mutex (a write(2) into the page cache) and waits for durability
// outside it; concurrent callers share one fdatasync (group commit): the first waiter
// syncs everything appended so far, the others wait for it.
//
// Crash safety. Records are framed [u32 length][u32 CRC-32C of seq+payload][u64 seq]
// [payload]; a torn or corrupt tail (a crash mid-write) ends the log on read and is cut
// off, and it was never acknowledged. A snapshot records the last seq it includes
// (LearnerState.log_seq) and is written atomically (temp + fsync + rename + directory
// fsync) before the log is truncated, so a crash between the two leaves records that
// replay skips. Seqs keep increasing across snapshots and restarts.
//
// Failure. A failed append leaves the file as it was (a partial write is truncated
// away) and the caller changes nothing. A failed fdatasync is fatal for this store: what
// the kernel did with the dirty pages is unknown, so every later Append/Sync fails
// (health() says why) until the process restarts and recovers from the disk. The caller
// must not acknowledge anything then.
//
// Thread-safety: every method is thread-safe. Write/Append are called under the
// handler's mutex (they order the state); Sync is called without it. Read/ReadLog are
// for recovery, before the store is shared (ReadLog reopens the log).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rlhf/v1/learner.pb.h"

namespace rlhf::learner {

class StateStore {
 public:
  virtual ~StateStore() = default;
  // Replaces the snapshot with `state` (durable when it returns); the log restarts empty.
  virtual absl::Status Write(const rlhf::v1::LearnerState& state) = 0;
  // The last snapshot; nullopt when nothing was ever written.
  virtual absl::StatusOr<std::optional<rlhf::v1::LearnerState>> Read() = 0;
  // The records appended after the snapshot, in order (a torn tail dropped).
  virtual absl::StatusOr<std::vector<rlhf::v1::LearnerLogRecord>> ReadLog() = 0;
  // Appends `record` with the next seq (set in the stored copy) and returns that seq;
  // not yet durable. On error nothing was appended.
  virtual absl::StatusOr<int64_t> Append(const rlhf::v1::LearnerLogRecord& record) = 0;
  // Blocks until every record up to `seq` is durable.
  virtual absl::Status Sync(int64_t seq) = 0;
  // The seq of the last record appended (0 before any); a snapshot includes it.
  virtual int64_t last_seq() const = 0;
  // Bytes in the log since the snapshot (a caller snapshots when it grows too long).
  virtual int64_t log_bytes() const = 0;
};

struct FileStateStoreOptions {
  std::string path;  // the snapshot; the log is "<path>.log" beside it
  // The sync call (fdatasync). Tests inject a slow or failing one; null = fdatasync.
  std::function<int(int fd)> sync_fn = nullptr;
};

// Snapshot file + log file.
class FileStateStore final : public StateStore {
 public:
  explicit FileStateStore(std::string path);
  explicit FileStateStore(FileStateStoreOptions options);
  ~FileStateStore() override;

  absl::Status Write(const rlhf::v1::LearnerState& state) override;
  absl::StatusOr<std::optional<rlhf::v1::LearnerState>> Read() override;
  absl::StatusOr<std::vector<rlhf::v1::LearnerLogRecord>> ReadLog() override;
  absl::StatusOr<int64_t> Append(const rlhf::v1::LearnerLogRecord& record) override;
  absl::Status Sync(int64_t seq) override;
  int64_t last_seq() const override;
  int64_t log_bytes() const override;

  // OK, or why the store can no longer be trusted (a failed sync).
  absl::Status health() const;
  // fdatasync calls made by Sync (group commit makes them fewer than the records).
  int64_t syncs() const;
  const std::string& log_path() const { return log_path_; }

 private:
  absl::Status OpenLogLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const FileStateStoreOptions options_;
  const std::string log_path_;
  mutable absl::Mutex mu_;
  absl::CondVar synced_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t size_ ABSL_GUARDED_BY(mu_) = 0;      // bytes of whole records in the log
  int64_t appended_ ABSL_GUARDED_BY(mu_) = 0;  // seq of the last record appended
  int64_t durable_ ABSL_GUARDED_BY(mu_) = 0;   // every seq <= this is on disk
  bool syncing_ ABSL_GUARDED_BY(mu_) = false;  // a Sync leader is in fdatasync
  int64_t syncs_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status broken_ ABSL_GUARDED_BY(mu_);  // sticky: a sync failed
};

}  // namespace rlhf::learner
