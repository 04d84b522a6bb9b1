package demo

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// narrator prints the demo as numbered steps, each with what it means in
// Kubernetes terms, its details and how long it took.
type narrator struct {
	w    io.Writer
	step int
}

const indent = "    "

func (n *narrator) printf(format string, args ...any) {
	fmt.Fprintf(n.w, format, args...)
}

// begin prints a step's title and meaning; label replaces the number for
// cleanup steps, which are not part of the story.
func (n *narrator) begin(label, title, meaning string) {
	if label == "" {
		n.step++
		label = fmt.Sprintf("%2d.", n.step)
	}
	n.printf("\n%s %s\n", label, title)
	if meaning != "" {
		for _, l := range wrap(meaning, 76-len(indent)) {
			n.printf("%s%s\n", indent, l)
		}
	}
}

// detail prints one fact a step found, marked so it stands apart from the
// explanation above it.
func (n *narrator) detail(format string, args ...any) {
	n.printf("%s-> %s\n", indent, fmt.Sprintf(format, args...))
}

func (n *narrator) end(d time.Duration, err error) {
	if err != nil {
		n.printf("%sFAILED after %s: %v\n", indent, roundDur(d), err)
		return
	}
	n.printf("%sdone in %s\n", indent, roundDur(d))
}

// roundDur keeps durations readable: ms for most steps, µs for quick ones.
func roundDur(d time.Duration) time.Duration {
	if d >= time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// wrap breaks text into lines of at most width runes at spaces.
func wrap(text string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, w := range strings.Fields(text) {
		if cur.Len() > 0 && cur.Len()+1+len(w) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(w)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}
