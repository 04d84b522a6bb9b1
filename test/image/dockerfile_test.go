package image

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/volplug/volplug/internal/testutil"
)

// The Dockerfile installs exactly the packages `make image` installs
// (scripts/image-packages), writes the same package list and puts volplug
// at the same path, so both images hold the same programs. Runs without
// root, in `make test` too.
func TestDockerfileMatchesImagePackages(t *testing.T) {
	root := testutil.ModuleRoot(t)
	list, err := os.ReadFile(filepath.Join(root, "scripts", "image-packages"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, line := range strings.Split(string(list), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line != "" {
			want = append(want, line)
		}
	}
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(df), "\\\n", " ")
	m := regexp.MustCompile(`apt-get install -y --no-install-recommends ([^&]+)&&`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("Dockerfile: no `apt-get install -y --no-install-recommends ... &&` line")
	}
	got := strings.Fields(m[1])
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Dockerfile installs %v, scripts/image-packages lists %v", got, want)
	}
	for _, s := range []string{
		"FROM debian:bookworm-slim", // mmdebstrap --variant=minbase, as build-image.sh
		"> /usr/share/volplug/packages",
		"-name __pycache__ -exec rm -rf", // as build-image.sh: .pyc files are not reproducible
		"COPY --from=build /out/volplug /usr/local/bin/volplug",
		`ENTRYPOINT ["/usr/local/bin/volplug"]`,
	} {
		if !strings.Contains(text, s) {
			t.Errorf("Dockerfile lacks %q", s)
		}
	}
	script, err := os.ReadFile(filepath.Join(root, "scripts", "build-image.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "variant=${IMAGE_VARIANT:-minbase}") {
		t.Error("build-image.sh no longer builds minbase, which debian:bookworm-slim is")
	}
}
