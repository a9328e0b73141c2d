package router

import (
	"testing"

	"github.com/cespare/xxhash/v2"
)

func TestPartitionRule(t *testing.T) {
	sep := PartitionRule{UseSeparator: true, Separator: '/'}
	fixed := PartitionRule{PrefixLen: 4}
	for _, tc := range []struct {
		name string
		rule PartitionRule
		key  string
		want string
	}{
		{"whole key", PartitionRule{}, "user/42", "user/42"},
		{"whole empty key", PartitionRule{}, "", ""},
		{"separator", sep, "user42/orders/7", "user42"},
		{"separator first", sep, "/x", ""},
		{"separator last", sep, "user42/", "user42"},
		{"no separator", sep, "user42", "user42"},
		{"separator zero byte", PartitionRule{UseSeparator: true}, "ab\x00cd", "ab"},
		{"fixed prefix", fixed, "abcdefgh", "abcd"},
		{"fixed exact length", fixed, "abcd", "abcd"},
		{"fixed shorter key", fixed, "ab", "ab"},
		{"separator wins over prefix", PartitionRule{UseSeparator: true, Separator: ':', PrefixLen: 2}, "abc:d", "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tc.rule.Partition([]byte(tc.key))); got != tc.want {
				t.Fatalf("Partition(%q) = %q, want %q", tc.key, got, tc.want)
			}
			if got, want := tc.rule.Hash([]byte(tc.key)), xxhash.Sum64String(tc.want); got != want {
				t.Fatalf("Hash(%q) = %#x, want xxhash64(%q) = %#x", tc.key, got, tc.want, want)
			}
		})
	}
}

func TestPartitionRuleValidate(t *testing.T) {
	for _, tc := range []struct {
		rule PartitionRule
		ok   bool
	}{
		{PartitionRule{}, true},
		{PartitionRule{PrefixLen: 8}, true},
		{PartitionRule{UseSeparator: true, Separator: '/'}, true},
		{PartitionRule{PrefixLen: -1}, false},
		{PartitionRule{UseSeparator: true, PrefixLen: 3}, false},
	} {
		if err := tc.rule.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tc.rule, err, tc.ok)
		}
	}
}
