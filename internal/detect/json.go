package detect

// Asterisk's [json] logger formatter (logger.conf "name => [json]notice,…",
// Asterisk 14+) writes one compact JSON object per message:
//
//	{"hostname":"pbx","timestamp":"Nov 25 04:00:51","identifiers":{"lwp":12666,"callid":""},
//	 "logmsg":{"location":{"filename":"chan_sip.c","function":"f","line":1},"level":"NOTICE","message":"…\n"}}
//
// The message is a JSON string: a newline an attacker puts in a field is
// written as \n and cannot start a forged line, which makes this the safest
// file format to feed pbxguard. The object is read with a small
// allocation-free scanner; the message is unescaped into a buffer the
// detector reuses.

// jsonRecord is what the scanner keeps of one object.
type jsonRecord struct {
	timestamp, filename, level, message []byte // raw (still escaped) string contents
	lwp                                 bool
}

// parseJSONRecord scans line (which starts with '{') and fills rec. Keys
// are matched at their fixed depth (identifiers.lwp, logmsg.location.filename,
// logmsg.level, logmsg.message, timestamp); anything else is skipped.
func parseJSONRecord(line []byte, rec *jsonRecord) bool {
	s := jsonScanner{b: line}
	return s.object(rec, 0, 0) && s.skipWS() == len(s.b)
}

type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) skipWS() int {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\r' || s.b[s.i] == '\n') {
		s.i++
	}
	return s.i
}

// path ids for the keys the detector wants
const (
	jpRoot = iota
	jpIdentifiers
	jpLogmsg
	jpLocation
)

func (s *jsonScanner) object(rec *jsonRecord, path, depth int) bool {
	if depth > 4 {
		return false
	}
	s.skipWS()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	s.skipWS()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return true
	}
	for {
		s.skipWS()
		key, ok := s.str()
		if !ok {
			return false
		}
		s.skipWS()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.skipWS()
		if s.i >= len(s.b) {
			return false
		}
		switch c := s.b[s.i]; {
		case c == '{':
			sub := -1
			switch {
			case path == jpRoot && string(key) == "identifiers":
				sub = jpIdentifiers
			case path == jpRoot && string(key) == "logmsg":
				sub = jpLogmsg
			case path == jpLogmsg && string(key) == "location":
				sub = jpLocation
			}
			if !s.object(rec, sub, depth+1) {
				return false
			}
		case c == '"':
			v, ok := s.str()
			if !ok {
				return false
			}
			switch {
			case path == jpRoot && string(key) == "timestamp":
				rec.timestamp = v
			case path == jpLocation && string(key) == "filename":
				rec.filename = v
			case path == jpLogmsg && string(key) == "level":
				rec.level = v
			case path == jpLogmsg && string(key) == "message":
				rec.message = v
			}
		default:
			start := s.i
			for s.i < len(s.b) && s.b[s.i] != ',' && s.b[s.i] != '}' && s.b[s.i] != ' ' {
				s.i++
			}
			v := s.b[start:s.i]
			if path == jpIdentifiers && string(key) == "lwp" {
				if len(v) == 0 || !isDigits(v) {
					return false
				}
				rec.lwp = true
			}
		}
		s.skipWS()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// str reads a JSON string at s.i and returns its raw contents.
func (s *jsonScanner) str() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch s.b[j] {
		case '\\':
			j++
		case '"':
			s.i = j + 1
			return s.b[start:j], true
		}
	}
	return nil, false
}

// jsonUnescape appends the unescaped JSON string contents raw to dst.
func jsonUnescape(dst, raw []byte) ([]byte, bool) {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		if i >= len(raw) {
			return dst, false
		}
		switch raw[i] {
		case '"', '\\', '/':
			dst = append(dst, raw[i])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			if i+4 >= len(raw) {
				return dst, false
			}
			r := 0
			for _, h := range raw[i+1 : i+5] {
				r <<= 4
				switch {
				case h >= '0' && h <= '9':
					r |= int(h - '0')
				case h >= 'a' && h <= 'f':
					r |= int(h-'a') + 10
				case h >= 'A' && h <= 'F':
					r |= int(h-'A') + 10
				default:
					return dst, false
				}
			}
			i += 4
			if r >= 0xd800 && r < 0xe000 {
				r = 0xfffd // surrogates: not needed for any field we read
			}
			dst = appendRune(dst, rune(r))
		default:
			return dst, false
		}
	}
	return dst, true
}

func appendRune(dst []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(dst, byte(r))
	case r < 0x800:
		return append(dst, 0xc0|byte(r>>6), 0x80|byte(r)&0x3f)
	default:
		return append(dst, 0xe0|byte(r>>12), 0x80|byte(r>>6)&0x3f, 0x80|byte(r)&0x3f)
	}
}

// parseJSONHeader fills h from a [json] formatter line, unescaping the
// message into *buf.
func parseJSONHeader(line []byte, h *astHeader, buf *[]byte) bool {
	line = trimRightSpace(line)
	if len(line) < 2 || line[0] != '{' || line[len(line)-1] != '}' {
		return false
	}
	var rec jsonRecord
	if !parseJSONRecord(line, &rec) || !rec.lwp || rec.message == nil {
		return false
	}
	if _, ok := parseAnyStamp(rec.timestamp, &h.st); !ok {
		return false
	}
	h.stOK = true
	lv, k := matchLevel(rec.level)
	if lv == lvOther || k != len(rec.level) {
		return false
	}
	if !validModule(rec.filename) {
		return false
	}
	h.form = formJSON
	h.level = lv
	h.date = rec.timestamp
	h.module = rec.filename
	if lv == lvVerbose {
		return true
	}
	m, ok := jsonUnescape((*buf)[:0], rec.message)
	if !ok {
		return false
	}
	*buf = m
	h.msg = trimRightSpace(trimLeftSpace(m))
	return true
}
