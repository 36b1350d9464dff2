package numbers

import (
	"fmt"
	"testing"
)

func mustNew(t testing.TB, home, access string) *Normalizer {
	t.Helper()
	n, err := New(Config{HomeRegion: home, AccessCode: access})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNormalizeTable(t *testing.T) {
	type want struct {
		e164    string
		country string
		typ     Type
		form    Form
		prefix  string
		intl    bool
	}
	tests := []struct {
		home, access, dialled string
		want                  want
	}{
		// US home: IDD 011, trunk prefix 1.
		{"US", "", "011442079460349", want{"+442079460349", "GB", TypeFixed, FormHomeIDD, "011", true}},
		{"US", "", "00442079460349", want{"+442079460349", "GB", TypeFixed, FormForeignIDD, "00", true}},
		{"US", "", "11442079460349", want{"+442079460349", "GB", TypeFixed, FormTruncated, "11", true}},
		{"US", "", "0011442079460349", want{"+442079460349", "GB", TypeFixed, FormForeignIDD, "0011", true}},
		{"US", "", "+442079460349", want{"+442079460349", "GB", TypeFixed, FormPlus, "+", true}},
		{"US", "", "81044 20 7946 0349", want{"+442079460349", "GB", TypeFixed, FormForeignIDD, "810", true}},
		{"US", "", "01044-20-7946-0349", want{"+442079460349", "GB", TypeFixed, FormForeignIDD, "010", true}},
		{"US", "", "442079460349", want{"+442079460349", "GB", TypeFixed, FormBare, "", true}},
		{"US", "", "0097225553791", want{"+97225553791", "IL", TypeFixed, FormForeignIDD, "00", true}},
		{"US", "", "01197225553791", want{"+97225553791", "IL", TypeFixed, FormHomeIDD, "011", true}},
		{"US", "", "0088213674923", want{"+88213674923", "", TypeInternationalNetwork, FormForeignIDD, "00", true}},
		{"US", "", "011870773123456", want{"+870773123456", "", TypeSatellite, FormHomeIDD, "011", true}},
		{"US", "", "0033170189999", want{"+33170189999", "FR", TypeFixed, FormForeignIDD, "00", true}},
		{"US", "", "2125550142", want{"+12125550142", "US", TypeFixedOrMobile, FormNational, "", false}},
		{"US", "", "13125550123", want{"+13125550123", "US", TypeFixedOrMobile, FormNational, "1", false}},
		{"US", "", "19005551234", want{"+19005551234", "US", TypePremium, FormNational, "1", false}},
		{"US", "", "18005551234", want{"+18005551234", "US", TypeTollFree, FormNational, "1", false}},
		{"US", "9", "9011442079460349", want{"+442079460349", "GB", TypeFixed, FormHomeIDD, "011", true}},
		{"US", "9", "912125550142", want{"+12125550142", "US", TypeFixedOrMobile, FormNational, "1", false}},
		// UK home: IDD 00, trunk prefix 0.
		{"GB", "", "02079460349", want{"+442079460349", "GB", TypeFixed, FormNational, "0", false}},
		{"GB", "", "00442079460349", want{"+442079460349", "GB", TypeFixed, FormHomeIDD, "00", false}},
		{"GB", "", "0012125550142", want{"+12125550142", "US", TypeFixedOrMobile, FormHomeIDD, "00", true}},
		{"GB", "", "01112125550142", want{"+12125550142", "US", TypeFixedOrMobile, FormForeignIDD, "011", true}},
		{"GB", "", "+97225553791", want{"+97225553791", "IL", TypeFixed, FormPlus, "+", true}},
		{"GB", "", "0097225553791", want{"+97225553791", "IL", TypeFixed, FormHomeIDD, "00", true}},
		{"GB", "", "09098790000", want{"+449098790000", "GB", TypePremium, FormNational, "0", false}},
		{"GB", "", "0088213674923", want{"+88213674923", "", TypeInternationalNetwork, FormHomeIDD, "00", true}},
		{"GB", "9", "90033170189999", want{"+33170189999", "FR", TypeFixed, FormHomeIDD, "00", true}},
		// Australia: IDD 0011, trunk prefix 0.
		{"AU", "", "0011442079460349", want{"+442079460349", "GB", TypeFixed, FormHomeIDD, "0011", true}},
		{"AU", "", "00442079460349", want{"+442079460349", "GB", TypeFixed, FormForeignIDD, "00", true}},
		{"AU", "", "011442079460349", want{"+442079460349", "GB", TypeFixed, FormForeignIDD, "011", true}},
		{"AU", "", "+61291234567", want{"+61291234567", "AU", TypeFixed, FormPlus, "+", false}},
		{"AU", "", "0291234567", want{"+61291234567", "AU", TypeFixed, FormNational, "0", false}},
		{"AU", "", "0412345678", want{"+61412345678", "AU", TypeMobile, FormNational, "0", false}},
		{"AU", "", "1900123456", want{"+611900123456", "AU", TypePremium, FormNational, "", false}},
		// Germany: IDD 00, trunk prefix 0.
		{"DE", "", "03012345678", want{"+493012345678", "DE", TypeFixed, FormNational, "0", false}},
		{"DE", "", "00493012345678", want{"+493012345678", "DE", TypeFixed, FormHomeIDD, "00", false}},
		{"DE", "", "0043123456789", want{"+43123456789", "AT", TypeFixed, FormHomeIDD, "00", true}},
		{"DE", "", "011442079460349", want{"+442079460349", "GB", TypeFixed, FormForeignIDD, "011", true}},
		{"DE", "", "+442079460349", want{"+442079460349", "GB", TypeFixed, FormPlus, "+", true}},
		{"DE", "", "09001234567", want{"+499001234567", "DE", TypePremium, FormNational, "0", false}},
		{"DE", "", "015112345678", want{"+4915112345678", "DE", TypeMobile, FormNational, "0", false}},
	}
	norms := map[string]*Normalizer{}
	for _, tt := range tests {
		if tt.dialled == "" {
			continue
		}
		key := tt.home + "/" + tt.access
		n := norms[key]
		if n == nil {
			n = mustNew(t, tt.home, tt.access)
			norms[key] = n
		}
		r := n.Normalize(tt.dialled)
		c, ok := r.BestCandidate()
		if !ok {
			t.Errorf("%s from %s: no candidate", tt.dialled, tt.home)
			continue
		}
		got := want{c.E164, c.Country, c.Type, c.Form, c.Prefix, c.International}
		if got != tt.want || !c.Valid {
			t.Errorf("%s from %s: got %+v valid=%v, want %+v (all: %+v)", tt.dialled, tt.home, got, c.Valid, tt.want, r.Candidates)
		}
	}
}

func TestNormalizeKeepsOtherReadings(t *testing.T) {
	n := mustNew(t, "US", "")
	r := n.Normalize("00442079460349")
	if len(r.Candidates) < 2 {
		t.Fatalf("want the invalid national reading kept beside the IDD one, got %+v", r.Candidates)
	}
	var sawNational bool
	for _, c := range r.Candidates {
		if c.Form == FormNational {
			sawNational = true
			if c.Valid {
				t.Errorf("national reading of 00442079460349 from the US should be invalid: %+v", c)
			}
		}
	}
	if !sawNational {
		t.Errorf("national reading missing: %+v", r.Candidates)
	}
}

func TestInternalAndGarbage(t *testing.T) {
	n := mustNew(t, "US", "9")
	for _, s := range []string{"1002", "s", "*97", "911", "", "abc", "0044x"} {
		r := n.Normalize(s)
		if r.International() {
			t.Errorf("%q: international", s)
		}
	}
	if r := n.Normalize("1002"); !r.Internal {
		t.Errorf("1002 should be internal")
	}
	if r := n.Normalize("abc"); r.Best != -1 || len(r.Candidates) != 0 {
		t.Errorf("abc: %+v", r)
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Config{HomeRegion: "XX"}); err == nil {
		t.Error("XX accepted")
	}
	if _, err := New(Config{HomeRegion: "US", AccessCode: "9#"}); err == nil {
		t.Error("access code 9# accepted")
	}
}

func TestCacheBounded(t *testing.T) {
	n, _ := New(Config{HomeRegion: "US", CacheSize: 8})
	for i := 0; i < 100; i++ {
		n.Normalize("01144207946" + string(rune('0'+i%10)) + string(rune('0'+i/10)) + "9")
	}
	if len(n.cache) > 8 || len(n.old) > 8 {
		t.Errorf("cache grew to %d+%d", len(n.cache), len(n.old))
	}
}

func BenchmarkNormalizeCached(b *testing.B) {
	n := mustNew(b, "US", "")
	n.Normalize("011442079460349")
	b.ReportAllocs()
	for b.Loop() {
		n.Normalize("011442079460349")
	}
}

func BenchmarkNormalizeUncached(b *testing.B) {
	n, _ := New(Config{HomeRegion: "US", CacheSize: 1})
	dialled := make([]string, 1000)
	for i := range dialled {
		dialled[i] = fmt.Sprintf("01144207946%04d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n.Normalize(dialled[i%len(dialled)])
		i++
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"011442079460349", "+8816123", "9", "++1", "00", "0088213674923"} {
		f.Add(s)
	}
	n, _ := New(Config{HomeRegion: "US", AccessCode: "9"})
	f.Fuzz(func(t *testing.T, s string) {
		r := n.Normalize(s)
		if r.Best >= len(r.Candidates) {
			t.Fatalf("best %d of %d", r.Best, len(r.Candidates))
		}
	})
}

// TestPrefixFormMatrix dials one foreign number with every prefix form from
// each home country and checks every reading lands on the same E.164 with
// the right form.
func TestPrefixFormMatrix(t *testing.T) {
	homes := []struct {
		home    string
		homeIDD string
		target  string // a valid foreign number, without "+"
		country string
	}{
		{"US", "011", "442079460349", "GB"},
		{"GB", "00", "4930123456", "DE"},
		{"AU", "0011", "442079460349", "GB"},
		{"DE", "00", "442079460349", "GB"},
	}
	prefixes := []struct {
		p    string
		form Form // when not the home IDD
	}{
		{"+", FormPlus}, {"00", FormForeignIDD}, {"011", FormForeignIDD}, {"0011", FormForeignIDD},
		{"810", FormForeignIDD}, {"010", FormForeignIDD}, {"001", FormForeignIDD}, {"11", FormTruncated}, {"", FormBare},
	}
	covered := 0
	for _, h := range homes {
		n := mustNew(t, h.home, "")
		for _, p := range prefixes {
			dialled := p.p + h.target
			want := p.form
			if p.p == h.homeIDD {
				want = FormHomeIDD
			}
			c, ok := n.Normalize(dialled).BestCandidate()
			if !ok || !c.Valid || c.E164 != "+"+h.target || c.Country != h.country || !c.International || c.Form != want || c.Prefix != p.p {
				t.Errorf("home %s, dialled %s: got %+v, want +%s %s form %s prefix %q", h.home, dialled, c, h.target, h.country, want, p.p)
				continue
			}
			covered++
		}
	}
	t.Logf("%d home × prefix readings checked", covered)
}

// TestDomesticFormMatrix dials a number of the home country in each form
// a local caller uses: never international.
func TestDomesticFormMatrix(t *testing.T) {
	tests := []struct {
		home, e164 string
		dialled    []string
	}{
		{"US", "+12125550142", []string{"2125550142", "12125550142", "+12125550142", "01112125550142"}},
		{"GB", "+442079460349", []string{"02079460349", "+442079460349", "00442079460349"}},
		{"AU", "+61291234567", []string{"0291234567", "+61291234567", "001161291234567"}},
		{"DE", "+493012345678", []string{"03012345678", "+493012345678", "00493012345678"}},
	}
	for _, tt := range tests {
		n := mustNew(t, tt.home, "")
		for _, d := range tt.dialled {
			c, ok := n.Normalize(d).BestCandidate()
			if !ok || !c.Valid || c.E164 != tt.e164 || c.International {
				t.Errorf("home %s, dialled %s: %+v, want domestic %s", tt.home, d, c, tt.e164)
			}
		}
	}
}
