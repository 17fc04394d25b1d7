package browser_test

import (
	"bufio"
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
)

// TestBrowserSignInSearchPlay is the web page's acceptance test, on the
// whole local stack (Kafka, ClickHouse, MinIO, Vault, Dex): chromium signs
// in through Dex's login form, searches for a call of the G.711 capture,
// opens it (its completeness label and ledger), plays it and seeks, and
// the page is kept as a screenshot (.stack/artefacts/web.png). The
// recording reaches the browser by HTTP Range requests.
func TestBrowserSignInSearchPlay(t *testing.T) {
	brokers := stacktest.Env(t, "VERBATIM_KAFKA_BROKERS")
	stacktest.Env(t, "VERBATIM_OIDC_ISSUER")
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is needed (make test installs Debian's package)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "verbatim")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/verbatim")
	build.Dir = "../.." // in Verbatim's own module
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	db, group := "verbatim_browser_"+stamp, "verbatim-process-browser-"+stamp
	verbatim := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("verbatim %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		conn, _, err := search.Open(context.Background(), search.Config{Addr: os.Getenv("VERBATIM_CLICKHOUSE_ADDR"), Database: db,
			User: os.Getenv("VERBATIM_CLICKHOUSE_USER"), Password: os.Getenv("VERBATIM_CLICKHOUSE_PASSWORD")})
		if err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+db+"`")
			conn.Close()
		}
	})
	verbatim("topics", "--create", "--brokers", brokers)
	cl, err := kafkaclient.New(stacktest.KafkaFor(strings.Split(brokers, ","), ""))
	if err != nil {
		t.Fatal(err)
	}
	stacktest.StartGroupAtEnd(ctx, t, cl, group, schemas.TopicMedia)
	cl.Close()
	verbatim("ingest", "pcap", "--tenant", "demo", "--brokers", brokers, stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	verbatim("process", "--brokers", brokers, "--group", group, "--instance", group, "--tenants", "demo", "--spool", t.TempDir(), "--exit-when-idle", "--quiet")
	verbatim("project", "search", "--brokers", brokers, "--database", db, "--group", "verbatim-project-browser-"+stamp, "--exit-when-idle")

	// The API, on the port of the stack's Dex redirect URI.
	api := exec.CommandContext(ctx, bin, "api", "--listen", "127.0.0.1:18443", "--public-url", "https://127.0.0.1:18443",
		"--brokers", brokers, "--database", db, "--spool", t.TempDir(), "--instance", "browser-"+stamp)
	stderr, err := api.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = api.Process.Signal(os.Interrupt)
		_ = api.Wait()
	})
	sc := bufio.NewScanner(stderr)
	listening := regexp.MustCompile(`api: listening on (https://\S+)`)
	base := ""
	for sc.Scan() {
		if m := listening.FindStringSubmatch(sc.Text()); m != nil {
			base = m[1]
			break
		}
		t.Log(sc.Text())
	}
	if base == "" {
		t.Fatal("the API did not start")
	}
	go func() { // the rest of its log, into the test's
		for sc.Scan() {
			t.Log("api: " + sc.Text())
		}
	}()

	// chromium: headless, as root without its sandbox; the stack's CA is
	// not in its store, so certificate errors are ignored for this
	// loopback test only; media may play without a click.
	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"), chromedp.WindowSize(1280, 900))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()
	var mu sync.Mutex
	ranges := 0
	if err := chromedp.Listen(bctx, func(ev any) {
		if r, ok := ev.(*network.EventResponseReceived); ok && strings.Contains(r.Response.URL, "/recording") && r.Response.Status == 206 {
			mu.Lock()
			ranges++
			mu.Unlock()
		}
		if x, ok := ev.(*runtime.EventExceptionThrown); ok { // the page's errors, in the test's log
			t.Errorf("the page threw: %s %s", x.ExceptionDetails.Text, x.ExceptionDetails.Exception.Description)
		}
	}); err != nil {
		t.Fatal(err)
	}
	signin, scancel := context.WithTimeout(bctx, time.Minute)
	defer scancel()
	err = chromedp.Do(signin,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-link")),
		chromedp.Click(chromedp.CSS("#signin-link")),
		// Dex's login form.
		chromedp.WaitVisible(chromedp.CSS(`input[name="login"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="login"]`), "supervisor@demo.example"),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), os.Getenv("VERBATIM_DEX_PASSWORD")),
		chromedp.Submit(chromedp.CSS(`input[name="password"]`)),
		// Back on the page, signed in: search for a call of the capture.
		chromedp.WaitVisible(chromedp.CSS("#app")),
		chromedp.SendKeys(chromedp.CSS(`#search input[name="call_id"]`), "1-1966@10.0.2.20"),
		chromedp.Click(chromedp.CSS(`#search button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#results tbody tr")),
		chromedp.Click(chromedp.CSS("#results tbody tr")),
		chromedp.WaitVisible(chromedp.CSS("#ledger tbody tr")),
	)
	if err != nil {
		page, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.location.href + "\n" + document.body.innerText`))
		t.Fatalf("browser: %v; the page at that moment:\n%s", err, page)
	}
	who := run(t, bctx, chromedp.Text(chromedp.CSS("#who")))
	rows := run(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll("#results tbody tr").length`))
	label := run(t, bctx, chromedp.Text(chromedp.CSS("#label")))
	ledgerRows := run(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll("#ledger tbody tr").length`))
	// Play, then seek to 5 s: the element fetches what it needs by range.
	run(t, bctx, chromedp.Evaluate[bool](`document.querySelector("#player").play().then(() => true)`, chromedp.EvalAwaitPromise))
	run(t, bctx, chromedp.Evaluate[float64](`document.querySelector("#player").currentTime = 5`))
	run(t, bctx, chromedp.Poll[bool](`(() => { const a = document.querySelector("#player"); return a.currentTime >= 5 && a.readyState >= 2 && !a.seeking; })()`,
		chromedp.WithPollingTimeout(30*time.Second)))
	position := run(t, bctx, chromedp.Evaluate[float64](`document.querySelector("#player").currentTime`))
	drawn := run(t, bctx, chromedp.Poll[string](`document.querySelector("#wave").dataset.drawn`, chromedp.WithPollingTimeout(30*time.Second)))
	t.Logf("signed in as %q; %d calls found; label %q; %d ledger rows; playing at %.1f s; waveform %s; %d range responses",
		who, rows, label, ledgerRows, position, drawn, ranges)
	if !strings.Contains(who, "demo") || !strings.Contains(who, "supervisor") || rows < 1 || !strings.HasPrefix(label, "complete") ||
		ledgerRows != 2 || position < 5 || drawn != "true" || ranges == 0 {
		t.Fatal("the page did not sign in, find, open, play and seek the call as it should (see above)")
	}
	// The download link is the recording, as an attachment.
	download := run(t, bctx, chromedp.Evaluate[string](`fetch(document.querySelector("#download").href).then(r => r.status + " " + r.headers.get("Content-Disposition"))`,
		chromedp.EvalAwaitPromise))
	if !strings.HasPrefix(download, "200 attachment") {
		t.Fatalf("download link: %s", download)
	}

	// A comment and tags, committed; once projected, in the call's
	// metadata when it is opened again.
	err = chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.CSS(`#comment input[name="text"]`), "callback promised"),
		chromedp.Click(chromedp.CSS(`#comment button`)),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	run(t, bctx, chromedp.Poll[bool](`document.querySelector("#change-status").dataset.saved === "comments"`, chromedp.WithPollingTimeout(30*time.Second)))
	if err := chromedp.Do(bctx, chromedp.SendKeys(chromedp.CSS(`#tags input[name="tags"]`), "vip, callback"), chromedp.Click(chromedp.CSS(`#tags button`))); err != nil {
		t.Fatalf("browser: %v", err)
	}
	run(t, bctx, chromedp.Poll[bool](`document.querySelector("#change-status").dataset.saved === "tags"`, chromedp.WithPollingTimeout(30*time.Second)))
	verbatim("project", "search", "--brokers", brokers, "--database", db, "--group", "verbatim-project-browser-"+stamp, "--exit-when-idle")
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#results tbody tr"))); err != nil {
		t.Fatalf("browser: %v", err)
	}
	metadata := run(t, bctx, chromedp.Poll[string](`(() => { const t = document.querySelector("#metadata").textContent; return t.includes("#vip") && t.includes("callback promised") ? t : null; })()`,
		chromedp.WithPollingTimeout(30*time.Second)))
	t.Logf("metadata after the comment and the tags: %s", metadata)

	// An export of the calls the form selects (the one call), with its
	// progress, then its zip.
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#export"))); err != nil {
		t.Fatalf("browser: %v", err)
	}
	run(t, bctx, chromedp.Poll[bool](`document.querySelector("#export-download") !== null`, chromedp.WithPollingTimeout(60*time.Second)))
	exported := run(t, bctx, chromedp.Text(chromedp.CSS("#export-status")))
	zipHead := run(t, bctx, chromedp.Evaluate[string](`fetch(document.querySelector("#export-download").href).then(r => r.arrayBuffer()).then(b => String.fromCharCode(...new Uint8Array(b.slice(0, 2))) + " " + b.byteLength)`,
		chromedp.EvalAwaitPromise))
	t.Logf("export: %s; zip %s", exported, zipHead)
	if !strings.HasPrefix(exported, "exported 1 recordings of 1 calls") || !strings.HasPrefix(zipHead, "PK ") {
		t.Fatalf("export: %q, zip %q", exported, zipHead)
	}
	shot := run(t, bctx, chromedp.FullScreenshot(100))
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 400 {
		t.Fatalf("screenshot of %v", b)
	}
	dir := filepath.Join(stacktest.Env(t, "VERBATIM_STACK_DIR"), "artefacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "web.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", filepath.Join(dir, "web.png"))

	// An auditor, in a browser context of their own, sees who did what:
	// the supervisor's playback and the recording stored, with the log's
	// latest signed checkpoint, and exports it.
	callID := run(t, bctx, chromedp.Text(chromedp.CSS("#detail-id")))
	out := verbatim("project", "audit", "--exit-when-idle", "--brokers", brokers, "--database", db)
	t.Log(strings.TrimSpace(out))
	actx2, acancel2 := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	defer acancel2()
	err = chromedp.Do(actx2,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-link")),
		chromedp.Click(chromedp.CSS("#signin-link")),
		chromedp.WaitVisible(chromedp.CSS(`input[name="login"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="login"]`), "auditor@demo.example"),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), os.Getenv("VERBATIM_DEX_PASSWORD")),
		chromedp.Submit(chromedp.CSS(`input[name="password"]`)),
		chromedp.WaitVisible(chromedp.CSS("#audit")),
		chromedp.SendKeys(chromedp.CSS(`#audit-search input[name="call_id"]`), callID),
		chromedp.Click(chromedp.CSS(`#audit-search button[type="submit"]`)),
	)
	if err != nil {
		t.Fatalf("browser (auditor): %v", err)
	}
	actions := run(t, actx2, chromedp.Poll[string](`(() => { const t = document.querySelector("#audit-entries tbody").textContent; return t.includes("recording.play") && t.includes("recording.stored") ? t : null; })()`,
		chromedp.WithPollingTimeout(30*time.Second)))
	checkpoint := run(t, actx2, chromedp.Poll[string](`(() => { const t = document.querySelector("#checkpoint").textContent; return t.startsWith("Latest signed checkpoint") ? t : null; })()`,
		chromedp.WithPollingTimeout(30*time.Second)))
	csvHead := run(t, actx2, chromedp.Evaluate[string](`fetch(document.querySelector("#audit-csv").href).then(r => r.text()).then(t => t.split("\n")[0])`, chromedp.EvalAwaitPromise))
	t.Logf("auditor: %s; %d bytes of entries; CSV header %q", checkpoint, len(actions), csvHead)
	if !strings.HasPrefix(csvHead, "index,event_id,occurred_at,action") {
		t.Fatalf("the audit CSV export: %q", csvHead)
	}
	auditShot := run(t, actx2, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, "audit.png"), auditShot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", filepath.Join(dir, "audit.png"))
}

// run runs one browser action and fails the test if it fails.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}
