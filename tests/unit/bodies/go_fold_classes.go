// Writes go1.19-fold-classes.json: the classes of runes that Go's
// strings.EqualFold (the rule encoding/json uses to match object keys to struct
// fields) treats as equal.  test_body.py checks go_fold against it.  Not built by
// the project; regenerate with the Go release that built the fronted dockerd:
//
//	GO111MODULE=off go run tests/unit/bodies/go_fold_classes.go > tests/unit/bodies/go1.19-fold-classes.json
package main

import (
	"encoding/json"
	"os"
	"runtime"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

func main() {
	seen := map[rune]bool{}
	classes := [][]int{}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if seen[r] || (r >= 0xD800 && r <= 0xDFFF) {
			continue
		}
		seen[r] = true
		// Candidates: the SimpleFold orbit of r and the case mappings met on it;
		// membership is decided by EqualFold itself.
		cand := map[rune]bool{}
		x := r
		for i := 0; i < 10; i++ {
			x = unicode.SimpleFold(x)
			cand[x] = true
			cand[unicode.ToLower(x)] = true
			cand[unicode.ToUpper(x)] = true
			cand[unicode.ToTitle(x)] = true
		}
		cls := []int{int(r)}
		for c := range cand {
			if c != r && !seen[c] && utf8.ValidRune(c) && strings.EqualFold(string(r), string(c)) {
				cls = append(cls, int(c))
				seen[c] = true
			}
		}
		if len(cls) > 1 {
			sort.Ints(cls)
			classes = append(classes, cls)
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"source":  "tests/unit/bodies/go_fold_classes.go",
		"go":      runtime.Version(),
		"unicode": unicode.Version,
		"classes": classes,
	})
}
