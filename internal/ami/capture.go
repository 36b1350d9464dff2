package ami

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ReadCapture reads every message of a recorded AMI byte stream (what a
// manager session received, as in the corpus' ami-events.raw.gz): for
// replaying calls, forensics and tests. A path ending in .gz is
// decompressed. Messages that do not parse are skipped and reported in
// err (joined), after all the others were read.
func ReadCapture(path string) ([]*Message, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var in io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("ami capture %s: %w", path, err)
		}
		in = zr
	}
	r := NewReader(in)
	var out []*Message
	var skipped error
	for {
		m, err := r.Next()
		var pe *ParseError
		switch {
		case errors.Is(err, io.EOF):
			return out, skipped
		case errors.As(err, &pe):
			skipped = errors.Join(skipped, fmt.Errorf("ami capture %s: %w", path, err))
		case err != nil:
			return out, errors.Join(skipped, fmt.Errorf("ami capture %s: %w", path, err))
		default:
			out = append(out, m)
		}
	}
}
