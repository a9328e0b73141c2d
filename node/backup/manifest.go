package backup

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
)

// ManifestFile is the name of a backup's manifest in its directory.
const ManifestFile = "MANIFEST"

// ManifestFormat is the manifest format this package writes and reads.
const ManifestFormat = 1

// fileMagic starts every shard file.
const fileMagic = "FLOTBAK1"

// maxChunk bounds a chunk's length as read from a file, so that a corrupt
// length is refused instead of allocated. A node's chunks are 256 KiB.
const maxChunk = 64 << 20

// Manifest describes a backup.
type Manifest struct {
	Format int `json:"format"`
	// StoreFormat is the storage format of the files' keys
	// (storage.FormatVersion).
	StoreFormat int    `json:"store_format"`
	ClusterID   uint64 `json:"cluster_id"`
	// Replication is the cluster's replication factor; a restored cluster
	// grows back to it as nodes join.
	Replication int `json:"replication"`
	// Started is when the backup began: every write acknowledged before it
	// is in the backup. Finished is when the last shard was read.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Shards, sorted by Start, tile the hash space.
	Shards []Shard `json:"shards"`
}

// Shard is one shard's entry in the manifest.
type Shard struct {
	ShardID uint64 `json:"shard_id"`
	// Start and Last bound its hash range, both inclusive.
	Start      uint64 `json:"start"`
	Last       uint64 `json:"last"`
	Generation uint64 `json:"generation"`
	// AppliedIndex and AppliedTerm: the shard's state the file holds.
	AppliedIndex uint64 `json:"applied_index"`
	AppliedTerm  uint64 `json:"applied_term"`
	// Node is the node whose replica was read.
	Node uint64 `json:"node"`
	// File is the file's name in the backup's directory.
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Keys counts the pairs (session records and data), Bytes the bytes of
	// their keys and values.
	Keys  uint64 `json:"keys"`
	Bytes uint64 `json:"bytes"`
}

// Totals returns the pairs, the bytes of their keys and values, and the
// bytes of the files of m.
func (m *Manifest) Totals() (keys, bytes uint64, fileBytes int64) {
	for _, s := range m.Shards {
		keys, bytes, fileBytes = keys+s.Keys, bytes+s.Bytes, fileBytes+s.Size
	}
	return keys, bytes, fileBytes
}

// descriptor is the shard's descriptor as far as its file's keys go: its
// ID and range.
func (s Shard) descriptor() storage.Descriptor {
	return storage.Descriptor{ShardID: s.ShardID, Start: s.Start, Last: s.Last, Generation: s.Generation}
}

// shardFileName is the name of shardID's file.
func shardFileName(shardID uint64) string { return fmt.Sprintf("shard-%020d.dat", shardID) }

var shardFileRE = regexp.MustCompile(`^shard-[0-9]{20}\.dat$`)

// checkRing checks that shards tile the hash space: sorted by start, no
// gap, no overlap, distinct user shard IDs.
func checkRing(shards []Shard) error {
	ranges := make([]router.Range, len(shards))
	for i, s := range shards {
		ranges[i] = router.Range{ShardID: s.ShardID, Start: s.Start, Last: s.Last}
	}
	slices.SortFunc(ranges, func(a, b router.Range) int { return cmp.Compare(a.Start, b.Start) })
	_, err := router.NewRing(1, ranges)
	return err
}

// ReadManifest reads and checks dir's manifest: its format, and that its
// shards tile the hash space and name files of the expected names. The
// files themselves are not read (Verify reads them).
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, &FileError{Path: path, Err: fmt.Errorf("%w: no manifest (not a backup, or one that did not finish)", ErrIncomplete)}
	}
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, &FileError{Path: path, Err: fmt.Errorf("%w: %v", ErrCorrupt, err)}
	}
	bad := func(format string, args ...any) (*Manifest, error) {
		return nil, &FileError{Path: path, Err: fmt.Errorf(format, args...)}
	}
	switch {
	case m.Format != ManifestFormat:
		return bad("%w: manifest format %d, this build reads %d", ErrFormat, m.Format, ManifestFormat)
	case m.StoreFormat != storage.FormatVersion:
		return bad("%w: keys of store format %d, this build reads %d", ErrFormat, m.StoreFormat, storage.FormatVersion)
	case m.ClusterID == 0 || m.Replication < 1 || len(m.Shards) == 0:
		return bad("%w: cluster ID %d, replication %d, %d shards", ErrCorrupt, m.ClusterID, m.Replication, len(m.Shards))
	}
	if err := checkRing(m.Shards); err != nil {
		return bad("%w: the shards do not tile the hash space: %v", ErrCorrupt, err)
	}
	for _, s := range m.Shards {
		if s.File != shardFileName(s.ShardID) || s.Size < int64(len(fileMagic)) || len(s.SHA256) != 2*sha256.Size {
			return bad("%w: shard %d: file %q of %d bytes, checksum %q", ErrCorrupt, s.ShardID, s.File, s.Size, s.SHA256)
		}
	}
	return &m, nil
}

// writeFileAtomic writes b to dir/name: a temporary file, synced, renamed,
// and the directory synced.
func writeFileAtomic(dir, name string, b []byte) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// chunkReader reads the chunks of a shard file, hashing every byte read.
type chunkReader struct {
	r    *bufio.Reader
	h    hash.Hash
	n    int64 // bytes read
	buf  []byte
	path string
}

func newChunkReader(f io.Reader, path string) *chunkReader {
	h := sha256.New()
	return &chunkReader{r: bufio.NewReaderSize(io.TeeReader(f, h), 1<<20), h: h, path: path}
}

func (c *chunkReader) corrupt(format string, args ...any) error {
	return &FileError{Path: c.path, Err: fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)}
}

// magic reads the file's magic.
func (c *chunkReader) magic() error {
	var m [len(fileMagic)]byte
	if _, err := io.ReadFull(c.r, m[:]); err != nil || string(m[:]) != fileMagic {
		return c.corrupt("not a shard file of a backup (magic %q)", m[:])
	}
	c.n += int64(len(m))
	return nil
}

// next returns the next chunk, valid until the next call, or io.EOF at the
// end of the file.
func (c *chunkReader) next() ([]byte, error) {
	n, err := binary.ReadUvarint(c.r)
	if errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	if err != nil || n == 0 || n > maxChunk {
		return nil, c.corrupt("chunk length %d at byte %d (%v)", n, c.n, err)
	}
	c.n += int64(uvarintLen(n))
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n)
	}
	c.buf = c.buf[:n]
	if _, err := io.ReadFull(c.r, c.buf); err != nil {
		return nil, c.corrupt("chunk of %d bytes at byte %d cut short", n, c.n)
	}
	c.n += int64(n)
	return c.buf, nil
}

// sum returns the hex SHA-256 of what was read.
func (c *chunkReader) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

func uvarintLen(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

// readShard reads the file of s in dir, checking every pair
// (storage.SnapshotDecoder: in order, inside the shard's spans), and calls
// fn, if not nil, with each chunk. It checks the file's size, checksum and
// counts against s once read; a file that is not what s says is a
// *FileError matching ErrCorrupt, naming the file.
func readShard(dir string, s Shard, fn func(chunk []byte) error) error {
	path := filepath.Join(dir, s.File)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return &FileError{Path: path, Err: fmt.Errorf("%w: the file of shard %d is missing", ErrIncomplete, s.ShardID)}
	}
	if err != nil {
		return &FileError{Path: path, Err: err}
	}
	defer f.Close()
	cr := newChunkReader(f, path)
	if err := cr.magic(); err != nil {
		return err
	}
	dec := storage.NewSnapshotDecoder(s.descriptor())
	for {
		chunk, err := cr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := dec.Decode(chunk, nil); err != nil {
			return cr.corrupt("%v", err)
		}
		if fn != nil {
			if err := fn(chunk); err != nil {
				return err
			}
		}
	}
	switch sum := cr.sum(); {
	case cr.n != s.Size:
		return cr.corrupt("%d bytes, the manifest says %d", cr.n, s.Size)
	case sum != s.SHA256:
		return cr.corrupt("checksum %s, the manifest says %s", sum, s.SHA256)
	case dec.Keys != s.Keys || dec.Bytes != s.Bytes:
		return cr.corrupt("%d pairs of %d bytes, the manifest says %d of %d", dec.Keys, dec.Bytes, s.Keys, s.Bytes)
	}
	return nil
}

// Verify checks the backup in dir: its manifest (ReadManifest), and every
// shard file read whole: its size and SHA-256 against the manifest, and
// its pairs (in order, inside the shard's range, as many as the manifest
// says). Every bad file is reported, each as a *FileError naming it
// (errors.Join of them); the manifest is returned with the error when it
// could be read.
func Verify(dir string) (*Manifest, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, s := range m.Shards {
		if err := readShard(dir, s, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}
