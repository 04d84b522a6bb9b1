package local

import (
	"errors"
	"testing"

	"github.com/volplug/volplug/internal/backend"
)

func TestChooseSize(t *testing.T) {
	for _, c := range []struct {
		required, limit, floor, want int64
		err                          error
	}{
		{0, 0, 0, DefaultSize, nil},
		{0, 100 * MiB, 0, 100 * MiB, nil},
		{1, 0, 0, MiB, nil},
		{MiB + 1, 0, 0, 2 * MiB, nil},
		{MiB + 1, MiB + 4096, 0, MiB + 4096, nil}, // a MiB would pass the limit
		{5000, 5120, 0, 5120, nil},                // exact sectors
		{10, 0, 300 * MiB, 300 * MiB, nil},        // the filesystem's minimum
		{10, 100 * MiB, 300 * MiB, 0, backend.ErrOutOfRange},
		{2 * MiB, MiB, 0, 0, backend.ErrOutOfRange},
		{-1, 0, 0, 0, backend.ErrOutOfRange},
		{1001, 1001, 0, 0, backend.ErrOutOfRange}, // not a whole sector
		{GiB, GiB, 0, GiB, nil},                   // required == limit is exact
	} {
		got, err := chooseSize(c.required, c.limit, c.floor)
		if !errors.Is(err, c.err) || (c.err == nil && got != c.want) {
			t.Errorf("chooseSize(%d, %d, %d) = %d, %v; want %d, %v", c.required, c.limit, c.floor, got, err, c.want, c.err)
		}
	}
}

func TestCheckID(t *testing.T) {
	for id, ok := range map[string]bool{
		"vol-0123": true, "pvc-1a2b.c_d": true, "A": true,
		"": false, "..": false, ".hidden": false, "a/b": false, "../x": false,
		"a b": false, string(make([]byte, 129)): false,
	} {
		if err := checkID(id); (err == nil) != ok {
			t.Errorf("checkID(%q) = %v", id, err)
		}
	}
}

func TestVolumeIDIsStableAndDistinct(t *testing.T) {
	first, again := volumeID("a"), volumeID("a")
	if first != again || first == volumeID("b") {
		t.Fatal("volume IDs must be a function of the name")
	}
	if err := checkID(volumeID("any name / with .. slashes")); err != nil {
		t.Fatal(err)
	}
}
