package main

import (
	"io"
	"strings"
	"unicode/utf8"
)

// writeTable prints rows as aligned columns, like `column -t`: each
// column padded to its widest cell, two spaces apart; a row's last cell is
// not padded (an empty last cell leaves the separator, as Qubes' listings
// do). Widths count characters, not bytes (qvm-ls --tree draws with "└─").
// Every listing of qvm goes through it.
func writeTable(w io.Writer, rows [][]string) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		b.WriteByte('\n')
	}
	io.WriteString(w, b.String())
}
