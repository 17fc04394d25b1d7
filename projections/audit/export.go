package audit

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/xuri/excelize/v2"
)

// MaxExport bounds the entries of one export.
const MaxExport = 1_000_000

// Export writes every entry q selects (from q.After on, at most
// MaxExport) as CSV or XLSX ("csv", "xlsx"), a header row first, and
// returns how many. Cells that a spreadsheet would run as a formula
// (starting with = + - @) are written as text.
func Export(ctx context.Context, conn driver.Conn, db string, q Query, format string, w io.Writer) (int, error) {
	var put func([]string) error
	var done func() error
	switch format {
	case "csv":
		cw := csv.NewWriter(w)
		put = func(r []string) error { return cw.Write(r) }
		done = func() error { cw.Flush(); return cw.Error() }
	case "xlsx":
		f := excelize.NewFile()
		defer f.Close()
		sw, err := f.NewStreamWriter("Sheet1")
		if err != nil {
			return 0, err
		}
		row := 0
		put = func(r []string) error {
			row++
			cell, err := excelize.CoordinatesToCellName(1, row)
			if err != nil {
				return err
			}
			vs := make([]any, len(r))
			for i, v := range r {
				vs[i] = v
			}
			return sw.SetRow(cell, vs)
		}
		done = func() error {
			if err := sw.Flush(); err != nil {
				return err
			}
			return f.Write(w)
		}
	default:
		return 0, fmt.Errorf("audit: format %q: csv or xlsx", format)
	}
	if err := put(Columns); err != nil {
		return 0, err
	}
	q.Limit = MaxLimit
	n := 0
	for {
		es, next, err := Search(ctx, conn, db, q)
		if err != nil {
			return n, err
		}
		for _, e := range es {
			if n == MaxExport {
				return n, fmt.Errorf("audit: more than %d entries: narrow the export (from, to, action)", MaxExport)
			}
			r := e.Row()
			for i, v := range r {
				if v != "" && strings.ContainsRune("=+-@", rune(v[0])) {
					r[i] = "'" + v
				}
			}
			if err := put(r); err != nil {
				return n, err
			}
			n++
		}
		if next == "" {
			break
		}
		q.After = next
	}
	return n, done()
}
