package iscsi

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi/iscsitest"
	"github.com/lockstep-io/lockstep/internal/cunit"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

// These tests drive the target with libiscsi's initiator tools (Debian
// libiscsi-bin, listed in scripts/deps/iscsi.txt).

func runTool(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	return runToolEnv(t, timeout, nil, name, args...)
}

func runToolEnv(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestLibiscsiTools(t *testing.T) {
	ls := testenv.LookPath(t, "iscsi-ls")
	inq := testenv.LookPath(t, "iscsi-inq")
	dev := memDev(t, 64<<20)
	ts := startServer(t, ServerConfig{}, simpleTarget(dev), TargetConfig{
		IQN: testIQN + "-chap", LUNs: []LUNConfig{{Device: dev}},
		CHAP: &CHAPConfig{Username: "alice", Secret: "initiator-secret-1"},
	}, TargetConfig{
		IQN: testIQN + "-mutual", LUNs: []LUNConfig{{Device: dev}},
		CHAP: &CHAPConfig{Username: "alice", Secret: "initiator-secret-1", MutualUsername: "tgt", MutualSecret: "target-secret-22"},
	})
	out, err := runTool(t, 30*time.Second, ls, "iscsi://"+ts.addr)
	if err != nil {
		t.Fatalf("iscsi-ls: %v\n%s", err, out)
	}
	for _, iqn := range []string{testIQN, testIQN + "-chap"} {
		if want := "Target:" + iqn + " Portal:" + ts.addr + ",1"; !strings.Contains(out, want) {
			t.Fatalf("iscsi-ls output lacks %q:\n%s", want, out)
		}
	}
	out, err = runTool(t, 30*time.Second, inq, "iscsi://"+ts.addr+"/"+testIQN+"/0")
	if err != nil || !strings.Contains(out, "Vendor:LOCKSTEP") {
		t.Fatalf("iscsi-inq: %v\n%s", err, out)
	}
	out, err = runTool(t, 30*time.Second, inq, "-e", "1", "-c", "131", "iscsi://"+ts.addr+"/"+testIQN+"/0")
	if err != nil || !strings.Contains(out, "Designator Type:(3)") {
		t.Fatalf("iscsi-inq device identification: %v\n%s", err, out)
	}
	out, err = runTool(t, 30*time.Second, inq, "iscsi://alice%initiator-secret-1@"+ts.addr+"/"+testIQN+"-chap/0")
	if err != nil || !strings.Contains(out, "Vendor:LOCKSTEP") {
		t.Fatalf("iscsi-inq with CHAP: %v\n%s", err, out)
	}
	out, err = runTool(t, 30*time.Second, inq, "iscsi://alice%wrong-secret-123@"+ts.addr+"/"+testIQN+"-chap/0")
	if err == nil {
		t.Fatalf("iscsi-inq with a wrong CHAP secret succeeded:\n%s", out)
	}
	// Mutual CHAP: libiscsi checks the target's answer.
	mutualURL := "iscsi://" + ts.addr + "/" + testIQN + "-mutual/0"
	env := []string{"LIBISCSI_CHAP_USERNAME=alice", "LIBISCSI_CHAP_PASSWORD=initiator-secret-1", "LIBISCSI_CHAP_TARGET_USERNAME=tgt"}
	out, err = runToolEnv(t, 30*time.Second, append(env, "LIBISCSI_CHAP_TARGET_PASSWORD=target-secret-22"), inq, mutualURL)
	if err != nil || !strings.Contains(out, "Vendor:LOCKSTEP") {
		t.Fatalf("iscsi-inq with mutual CHAP: %v\n%s", err, out)
	}
	out, err = runToolEnv(t, 30*time.Second, append(env, "LIBISCSI_CHAP_TARGET_PASSWORD=not-the-target-pw"), inq, mutualURL)
	if err == nil {
		t.Fatalf("libiscsi accepted a target that does not know the mutual secret:\n%s", out)
	}
}

// qemu's iSCSI driver (the one Proxmox and plain QEMU VMs use) must read a
// thin 4096-byte-block LUN with its default cache: a block-limits page that
// made it infer a 4 KiB cluster sent its allocation check an unaligned
// length on every read of 32 KiB or more, and qemu aborted.
func TestQemuReadsThin4KLUN(t *testing.T) {
	qio := testenv.LookPath(t, "qemu-io")
	dev, err := blockdev.NewMem("mem-4k", 64<<20, 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, ServerConfig{}, simpleTarget(dev))
	url := "iscsi://" + ts.addr + "/" + testIQN + "/0"
	out, err := runTool(t, time.Minute, qio, "-f", "raw",
		"-c", "write -P 0x5c 1M 256k", "-c", "read -P 0x5c 1M 256k", "-c", "read -P 0 8M 1M", "-c", "read -P 0 0 64k", url)
	if err != nil || strings.Contains(out, "Assertion") || strings.Contains(out, "Pattern verification failed") {
		if strings.Contains(out, "Unknown protocol") {
			testenv.Unavailable(t, "qemu's iscsi driver (qemu-block-extra): %s", out)
		}
		t.Fatalf("qemu-io on a 4096-byte thin LUN: %v\n%s", err, out)
	}
}

// TestLibiscsiHeaderDigest checks our CRC32C against libiscsi's: a target
// that requires header digests serves libiscsi, which offers None,CRC32C.
func TestLibiscsiHeaderDigest(t *testing.T) {
	rc := testenv.LookPath(t, "iscsi-readcapacity16")
	cu := testenv.LookPath(t, "iscsi-test-cu")
	dev := memDev(t, 64<<20)
	ts := startServer(t, ServerConfig{RequireHeaderDigest: true}, simpleTarget(dev))
	url := "iscsi://" + ts.addr + "/" + testIQN + "/0"
	out, err := runTool(t, 30*time.Second, rc, url)
	if err != nil || !strings.Contains(out, "Total size:67108864") {
		t.Fatalf("iscsi-readcapacity16 with header digests: %v\n%s", err, out)
	}
	if !strings.Contains(ts.logs.String(), "header_digest=true") {
		t.Fatal("header digest was not negotiated")
	}
	// Data moves correctly with digests on every PDU.
	out, err = runTool(t, 2*time.Minute, cu, "--dataloss", "--test=ALL.Write10", url)
	if err != nil || !strings.Contains(out, "Tests completed with return value: 0") || strings.Contains(out, "FAILED") {
		t.Fatalf("iscsi-test-cu Write10 with header digests: %v\n%s", err, out)
	}
}

// conformanceExpected holds the per-test results of iscsi-test-cu's ALL
// family against a thin 512-byte-block disk; regenerate with
// LOCKSTEP_UPDATE_ISCSI_EXPECTED=1 after a deliberate change.
const conformanceExpected = "testdata/iscsi-test-cu-ALL.expected"

func TestLibiscsiConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance run skipped in -short mode")
	}
	cu := testenv.LookPath(t, "iscsi-test-cu")
	stdbuf := testenv.LookPath(t, "stdbuf")
	dev := memDev(t, 128<<20)
	ro, err := blockdev.NewMem("read-only", 128<<20, 512, true)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, ServerConfig{}, simpleTarget(dev), TargetConfig{IQN: testIQN + "-ro", LUNs: []LUNConfig{{Device: ro}}})
	url := "iscsi://" + ts.addr + "/" + testIQN + "/0"
	path2 := "iscsi://" + ts.addPortal(t) + "/" + testIQN + "/0"

	list, err := runTool(t, 30*time.Second, cu, "-l")
	if err != nil {
		t.Fatalf("iscsi-test-cu -l: %v\n%s", err, list)
	}
	suites := cunit.Suites(list, "ALL")
	if len(suites) < 40 {
		t.Fatalf("only %d suites in the ALL family:\n%s", len(suites), list)
	}
	got := map[string]string{}
	type tally struct{ pass, skip, fail int }
	perSuite := map[string]*tally{}
	for _, suite := range suites {
		// stdbuf keeps CUnit's verdicts and libiscsi's log lines in order.
		out, err := runTool(t, 5*time.Minute, stdbuf, cunit.SuiteArgs(cu, suite, url, path2)...)
		if err != nil {
			t.Errorf("suite %s: iscsi-test-cu: %v", suite, err)
		}
		res := cunit.Parse(out)
		if len(res) == 0 {
			t.Errorf("suite %s: no test results parsed:\n%s", suite, out)
		}
		tl := &tally{}
		perSuite[suite] = tl
		for name, r := range res {
			got["ALL."+suite+"."+name] = r
			switch r {
			case "pass":
				tl.pass++
			case "skip":
				tl.skip++
			default:
				tl.fail++
				t.Logf("suite %s test %s failed:\n%s", suite, name, out)
			}
		}
		// The target must survive every suite: a fresh login still works.
		ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
		if err != nil {
			t.Fatalf("target did not survive suite %s: %v", suite, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		must(t)(ini.Command(ctx, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
		ini.Logout(ctx)
		cancel()
	}

	// The ReadOnly suite only runs against a write-protected LUN.
	out, err := runTool(t, 5*time.Minute, stdbuf, "-o0", "-e0", cu, "--dataloss", "--verbose", "--test=ALL.ReadOnly", "iscsi://"+ts.addr+"/"+testIQN+"-ro/0")
	if err != nil {
		t.Errorf("read-only LUN: iscsi-test-cu: %v", err)
	}
	for name, r := range cunit.Parse(out) {
		got["read-only-lun:ALL.ReadOnly."+name] = r
		if r == "fail" {
			t.Logf("read-only LUN test %s failed:\n%s", name, out)
		}
	}

	var summary strings.Builder
	fmt.Fprintf(&summary, "| suite | pass | skip | fail |\n|---|---:|---:|---:|\n")
	var tp, tsk, tf int
	for _, s := range suites {
		tl := perSuite[s]
		fmt.Fprintf(&summary, "| %s | %d | %d | %d |\n", s, tl.pass, tl.skip, tl.fail)
		tp, tsk, tf = tp+tl.pass, tsk+tl.skip, tf+tl.fail
	}
	fmt.Fprintf(&summary, "| **total** | %d | %d | %d |\n", tp, tsk, tf)
	t.Logf("iscsi-test-cu ALL family summary:\n%s", summary.String())

	if os.Getenv("LOCKSTEP_UPDATE_ISCSI_EXPECTED") == "1" {
		var b strings.Builder
		b.WriteString("# iscsi-test-cu --test=ALL.<suite> results (test<TAB>pass|skip|fail); see docs/iscsi-conformance.md\n")
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s\t%s\n", k, got[k])
		}
		if err := os.WriteFile(conformanceExpected, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want := readExpected(t)
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: expected %s, test did not run", k, w)
		} else if g != w {
			t.Errorf("%s: got %s, expected %s", k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: got %s, not in %s", k, g, conformanceExpected)
		}
	}
}

func readExpected(t *testing.T) map[string]string {
	want, err := cunit.ReadExpected(conformanceExpected)
	if err != nil {
		t.Fatal(err)
	}
	return want
}
