package main

import "testing"

func TestByteSize(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "4096": 4096, "512MiB": 512 << 20, "1GiB": 1 << 30, "3KiB": 3 << 10, "2TiB": 2 << 40} {
		var b byteSize
		if err := b.Set(in); err != nil || uint64(b) != want {
			t.Errorf("%q: %d, %v; want %d", in, b, err, want)
		}
	}
	for _, bad := range []string{"", "12XB", "-1", "1.5GiB", "MiB", "99999999999TiB"} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("%q accepted as %d", bad, b)
		}
	}
	b := byteSize(512 << 20)
	if b.String() != "512MiB" {
		t.Errorf("String: %s", b.String())
	}
}
