// Package cunit reads libiscsi's iscsi-test-cu results: the verbose CUnit
// output of a run, and the expected-results files the conformance tests
// compare a run with.
package cunit

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

var (
	testStart   = regexp.MustCompile(`(?m)^  Test: (\S+) \.\.\.`)
	testOutcome = regexp.MustCompile(`(?m)(?:\.\.\.|^)(passed|FAILED)\b`)
)

// Parse classifies each test of a verbose CUnit run as "pass", "skip"
// (passed after logging [SKIPPED]) or "fail"; a test with no verdict (the
// run died inside it) is a failure.
func Parse(out string) map[string]string {
	res := map[string]string{}
	starts := testStart.FindAllStringSubmatchIndex(out, -1)
	for i, s := range starts {
		name := out[s[2]:s[3]]
		end := len(out)
		if i+1 < len(starts) {
			end = starts[i+1][0]
		}
		body := out[s[1]-3 : end]
		m := testOutcome.FindStringSubmatchIndex(body)
		switch {
		case m == nil:
			res[name] = "fail"
		case body[m[2]:m[3]] == "FAILED":
			res[name] = "fail"
		case strings.Contains(body[:m[0]], "[SKIPPED]"):
			res[name] = "skip"
		default:
			res[name] = "pass"
		}
	}
	return res
}

// ReadExpected reads a file of "TEST<TAB>RESULT" lines ('#' comments).
func ReadExpected(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("expected results: %w", err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		ln := sc.Text()
		if ln == "" || strings.HasPrefix(ln, "#") {
			continue
		}
		k, v, ok := strings.Cut(ln, "\t")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want TEST<TAB>RESULT, found %q", path, n, ln)
		}
		want[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return want, nil
}

// Suites lists the suites of family in the output of `iscsi-test-cu -l`.
func Suites(list, family string) []string {
	var out []string
	for _, ln := range strings.Split(list, "\n") {
		if parts := strings.Split(strings.TrimSpace(ln), "."); len(parts) == 2 && parts[0] == family {
			out = append(out, parts[1])
		}
	}
	return out
}

// SuiteArgs returns the arguments of `iscsi-test-cu` (run under `stdbuf
// -o0 -e0`, which keeps CUnit's verdicts and the tool's log lines in order)
// for one suite of the ALL family against url. MultipathIO also gets path2,
// the same LUN through a second portal, as a multipath initiator sees it;
// without it the suite skips.
func SuiteArgs(cu, suite, url, path2 string) []string {
	args := []string{"-o0", "-e0", cu, "--dataloss", "--verbose", "--test=ALL." + suite, url}
	if suite == "MultipathIO" {
		args = append(args, path2)
	}
	return args
}
