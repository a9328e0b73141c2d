package backup

import (
	"errors"
	"fmt"
)

// Errors of backups.
var (
	// ErrDirNotEmpty: the directory to back up into holds files already.
	ErrDirNotEmpty = errors.New("backup: directory is not empty")
	// ErrCorrupt: a backup file does not hold what the manifest says (its
	// size, checksum or pairs), or the manifest is malformed.
	ErrCorrupt = errors.New("backup: corrupt")
	// ErrIncomplete: the directory has no MANIFEST (a backup that did not
	// finish) or a file the manifest names is missing.
	ErrIncomplete = errors.New("backup: incomplete")
	// ErrRingChanged: shards were split or merged while the backup ran;
	// the shards read do not tile the hash space. Retry.
	ErrRingChanged = errors.New("backup: the ring changed during the backup")
	// ErrFormat: the backup was written in a format this build does not
	// read (the manifest's, or the store's keys).
	ErrFormat = errors.New("backup: unsupported format")
	// ErrShardUnavailable: no replica of a shard served its backup.
	ErrShardUnavailable = errors.New("backup: no replica of the shard served it")
)

// FileError is a problem with one file of a backup; Err matches one of
// the package's sentinels.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }
