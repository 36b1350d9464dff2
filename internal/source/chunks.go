package source

import (
	"bytes"
	"io"
	"sync"
)

// ParallelChunks reads r to its end in chunks of size bytes cut at line
// ends and hands each chunk to one of workers goroutines: work(w, chunk),
// where w (0 ≤ w < workers) names the goroutine, so that per-worker state
// needs no lock, and chunk holds whole lines ('\n' included; the input's
// last line may lack it). chunk is valid only during the call.
//
// A line longer than size is never handed on (its cut end could be taken
// for a line of its own): overlong is called once for it, on the reading
// goroutine. Memory is bounded by workers+2 chunks whatever the input's
// size. The first read error other than io.EOF is returned, after every
// chunk read before it was worked on.
func ParallelChunks(r io.Reader, workers, size int, work func(w int, chunk []byte), overlong func()) error {
	workers = max(workers, 1)
	free := make(chan []byte, workers+2)
	for range workers + 2 {
		free <- make([]byte, size)
	}
	type chunk struct{ buf, data []byte }
	todo := make(chan chunk, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for ch := range todo {
				work(w, ch.data)
				free <- ch.buf
			}
		})
	}
	var rerr error
	var carry []byte  // start of a line continued in the next chunk
	skipping := false // inside an over-long line: drop bytes up to its end
	for {
		b := <-free
		b = b[:cap(b)]
		n := copy(b, carry)
		m, err := io.ReadFull(r, b[n:])
		n += m
		eof := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !eof {
			rerr = err
		}
		data := b[:n]
		stillSkipping := false
		if skipping {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				data = data[:0]
				stillSkipping = true
			} else {
				data = data[i+1:]
				skipping = false
			}
		}
		cut := len(data)
		if !eof && rerr == nil && !stillSkipping {
			if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
				cut = i + 1
			} else if n == len(b) {
				// No line end in a whole chunk: an over-long line.
				if overlong != nil {
					overlong()
				}
				skipping = true
				cut = 0
				data = data[:0]
			}
		}
		carry = append(carry[:0], data[cut:]...)
		if cut > 0 {
			todo <- chunk{buf: b, data: data[:cut]}
		} else {
			free <- b
		}
		if eof || rerr != nil {
			break
		}
	}
	close(todo)
	wg.Wait()
	return rerr
}

// EachLine calls fn for every line of chunk, '\n' included (the last line
// may lack it).
func EachLine(chunk []byte, fn func(line []byte)) {
	for len(chunk) > 0 {
		line := chunk
		if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
			line, chunk = chunk[:i+1], chunk[i+1:]
		} else {
			chunk = nil
		}
		fn(line)
	}
}
