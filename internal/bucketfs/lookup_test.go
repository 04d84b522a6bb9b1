package bucketfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// Many files created in one directory, over many cache TTLs: once the
// directory's listing is stale, the next new name lists the directory again
// (one request for up to 1,000 names) instead of asking the store for each
// name, so the creates cost a request per TTL, not one each. What another
// client put meanwhile is in the new listing.
func TestCreatesRelistTheDirectory(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.CacheTTL = 50 * time.Millisecond
	s, mnt := e.mount(t, "m", cfg)
	dir := filepath.Join(mnt, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lookups, listings := s.StoreLookups(), s.StoreListings()
	start, n := time.Now(), 0
	for ; time.Since(start) < 600*time.Millisecond || n < 100; n++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", n)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if n%20 == 19 {
			time.Sleep(cfg.CacheTTL / 2)
		}
	}
	asked := s.StoreLookups() - lookups
	listed := s.StoreListings() - listings
	// 600 ms is 12 TTLs: about 12 listings. Asking name by name made
	// about one request per create.
	if asked+listed > int64(n)/4 {
		t.Errorf("%d creates asked the store %d times for a name and listed the directory %d times", n, asked, listed)
	}
	if listed == 0 {
		t.Errorf("%d creates over 12 TTLs never listed the directory again", n)
	}
	t.Logf("%d creates: %d lookups, %d listings", n, asked, listed)

	// Another client's object shows after the TTL, through a relisting.
	if _, err := e.cl.PutObject(context.Background(), bucket, "d/other", bytes.NewReader([]byte("elsewhere")), 9, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * cfg.CacheTTL)
	if got, err := os.ReadFile(filepath.Join(dir, "other")); err != nil || string(got) != "elsewhere" {
		t.Fatalf("object put by another client: %q %v", got, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != n+1 {
		t.Fatalf("the directory lists %d entries (%v), want %d", len(ents), err, n+1)
	}
}
