package storage

import (
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// syncFS counts the file syncs Pebble asks of the file system: the store's
// real fsyncs (write-ahead log, sstables, manifest), however many batches
// each one covers. The engine reports them (Stats.FileSyncs): with batches
// of several workers sharing a sync, the synced commits no longer count
// the fsyncs.
type syncFS struct {
	vfs.FS
	n *atomic.Uint64
}

func (fs syncFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	return syncFile{File: f, n: fs.n}, nil
}

func (fs syncFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, c))
}

func (fs syncFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, c, opts...))
}

func (fs syncFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, c))
}

func (fs syncFS) OpenDir(name string) (vfs.File, error) { return fs.wrap(fs.FS.OpenDir(name)) }

type syncFile struct {
	vfs.File
	n *atomic.Uint64
}

func (f syncFile) Sync() error {
	f.n.Add(1)
	return f.File.Sync()
}

func (f syncFile) SyncData() error {
	f.n.Add(1)
	return f.File.SyncData()
}

func (f syncFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	if full {
		f.n.Add(1)
	}
	return full, err
}
