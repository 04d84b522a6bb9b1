package ctl

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Output formats.
const (
	FormatTable = "table"
	FormatJSON  = "json"
)

// printer writes responses either as aligned text or as protojson, one
// JSON document per response so that `jq` can read a stream of them.
type printer struct {
	w         io.Writer
	format    string
	noHeaders bool
}

func newPrinter(w io.Writer, format string, noHeaders bool) (*printer, error) {
	switch format {
	case FormatTable, FormatJSON:
	default:
		return nil, fmt.Errorf("output format %q: want %s or %s", format, FormatTable, FormatJSON)
	}
	return &printer{w: w, format: format, noHeaders: noHeaders}, nil
}

// table collects rows and aligns them on flush.
type table struct {
	tw   *tabwriter.Writer
	rows int
}

// print emits one response. In table mode rows(t) fills the table; header
// (may be nil) is printed first unless --no-headers was given. Commands
// that change things pass no header, so their first column (the ID) can
// be cut with awk without skipping a line.
func (p *printer) print(msg proto.Message, header []string, rows func(t *table)) error {
	if p.format == FormatJSON {
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(msg)
		if err != nil {
			return fmt.Errorf("encode %T: %w", msg, err)
		}
		if _, err := fmt.Fprintf(p.w, "%s\n", b); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	}
	t := &table{tw: tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)}
	if header != nil && !p.noHeaders {
		t.row(toAny(header)...)
	}
	if rows != nil {
		rows(t)
	}
	if err := t.tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// row writes one line; empty cells show "-" so columns stay countable
// for awk.
func (t *table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		v := fmt.Sprint(c)
		if v == "" {
			v = "-"
		}
		// Tabs or newlines inside a cell would break the alignment and
		// the one-line-per-record promise.
		s[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(v)
	}
	fmt.Fprintln(t.tw, strings.Join(s, "\t"))
	t.rows++
}

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}

// HumanBytes prints a byte count in binary units, the way df -h does.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return strconv.FormatInt(n, 10) + "B"
	}
	f := float64(n)
	suffixes := []string{"Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	i := -1
	for (f >= unit || f <= -unit) && i < len(suffixes)-1 {
		f /= unit
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + suffixes[i]
}
