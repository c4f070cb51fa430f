package main

import (
	"regexp"
	"strings"
)

var chunkRE = regexp.MustCompile(`\s+|\S+`)

// wrapText fills text to width columns like Python's textwrap.fill (which
// Qubes' help listings use): lines start with indent (the first) or
// subsequent (the others); runs of spaces inside a line stay, whitespace
// at a line's start (but the text's) and end goes; a word longer than a
// line is cut.
func wrapText(text string, width int, indent, subsequent string) string {
	chunks := chunkRE.FindAllString(strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f' {
			return ' '
		}
		return r
	}, text), -1)
	var lines []string
	first := true
	for len(chunks) > 0 {
		prefix := subsequent
		if first {
			prefix = indent
		}
		avail := width - len(prefix)
		if !first && strings.TrimSpace(chunks[0]) == "" {
			chunks = chunks[1:]
			if len(chunks) == 0 {
				break
			}
		}
		var cur []string
		n := 0
		for len(chunks) > 0 && n+len(chunks[0]) <= avail {
			cur = append(cur, chunks[0])
			n += len(chunks[0])
			chunks = chunks[1:]
		}
		if len(chunks) > 0 && len(chunks[0]) > avail {
			// A word too long for any line: cut it.
			room := max(avail-n, 1)
			cur = append(cur, chunks[0][:room])
			chunks[0] = chunks[0][room:]
		}
		if len(cur) > 0 && strings.TrimSpace(cur[len(cur)-1]) == "" {
			cur = cur[:len(cur)-1]
		}
		if len(cur) > 0 {
			lines = append(lines, prefix+strings.Join(cur, ""))
		}
		first = false
	}
	return strings.Join(lines, "\n")
}
