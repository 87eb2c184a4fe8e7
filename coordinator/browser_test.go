package coordinator

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/agentnet/agentnet/wire"
)

// chromiumPath is Debian's chromium; the browser test skips without it.
const chromiumPath = "/usr/bin/chromium"

// TestConsoleBrowser drives the console in a real headless Chromium: log
// in, read the agents table, create a token through the form (a real
// browser's same-origin POST: Origin null under no-referrer, plus
// Sec-Fetch-Site) and enroll with it, then watch the network map update
// live over SSE and screenshot it. AGENTNET_SCREENSHOT=path also saves the
// screenshot there.
func TestConsoleBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("AGENTNET_REQUIRE_BROWSER") != "" {
			t.Fatalf("AGENTNET_REQUIRE_BROWSER is set but %s is missing: %v", chromiumPath, err)
		}
		t.Skipf("browser test skipped: %s not found (apt-get install chromium)", chromiumPath)
	}
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	start := time.Now()
	h := newConsoleHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true, Tags: []string{"tag:demo"}})
	for i, name := range []string{"alpha", "bravo", "charlie"} {
		n := newTestNode(t, h.c)
		n.enroll(tok, name)
		if i < 2 { // charlie stays offline
			n.openStream(h.c.PublicKey())
		}
	}

	profile := t.TempDir()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("ignore-certificate-errors", true), // the coordinator's self-signed certificate
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1200, 900),
	)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 25*time.Second)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancelTimeout()
			cancelBrowser() // closes the browser
			cancelAlloc()   // kills it if needed and waits for the process
		}
	}
	defer stop()

	base := h.c.URL()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Login: the console sends us to the login form first.
	must("open agents", chromedp.Do(ctx,
		chromedp.Navigate(base+"/console/agents"),
		chromedp.WaitVisible(chromedp.ID("secret")),
	))
	loc, err := chromedp.Run(ctx, chromedp.Location())
	must("location", err)
	if !strings.HasSuffix(loc, "/console/login") {
		t.Errorf("unauthenticated agents page went to %s, want the login page", loc)
	}
	must("log in", chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("secret"), h.c.AdminCred().Secret),
		chromedp.Click(chromedp.CSS(`#login button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("agents")),
	))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("#agents tbody tr")].map(r => r.innerText.replace(/\s+/g, " "))`))
	must("agents rows", err)
	if len(rows) != 3 {
		t.Fatalf("agents table has %d rows, want 3: %q", len(rows), rows)
	}
	for i, want := range []string{"alpha", "bravo", "charlie"} {
		status := "online"
		if want == "charlie" {
			status = "offline"
		}
		if !strings.HasPrefix(rows[i], want+" ") || !strings.Contains(rows[i], status) || !strings.Contains(rows[i], "tag:demo") {
			t.Errorf("agents row %d = %q, want %s, %s, tag:demo", i, rows[i], want, status)
		}
	}

	// Create a token through the form and enroll a node with it.
	must("create token", chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`nav a[href="/console/tokens"]`)),
		chromedp.WaitVisible(chromedp.ID("create-token")),
		chromedp.SendKeys(chromedp.ID("tags"), "tag:browser"),
		chromedp.SendKeys(chromedp.ID("ttl"), "1h"),
		chromedp.Click(chromedp.CSS(`#create-token button[type=submit]`)),
	))
	newTok, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("new-token")))
	if err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("no new token on the page: %v\n%s", err, body)
	}
	newTok = strings.TrimSpace(newTok)
	delta := newTestNode(t, h.c)
	if got := delta.enroll(newTok, "delta").Node.Tags; len(got) != 1 || got[0] != "tag:browser" {
		t.Errorf("delta tags %v, want [tag:browser]", got)
	}

	// The map: four circles from the server, then a live update when delta
	// comes online (3 online, 3 direct paths).
	must("open map", chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`nav a[href="/console/map"]`)),
		chromedp.WaitVisible(chromedp.ID("netmap")),
	))
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](
		`document.querySelectorAll("#netmap circle.node").length === 4 && Number(document.getElementById("netmap").dataset.updates) >= 1`,
		chromedp.WithPollingTimeout(10*time.Second)))
	must("map drawn from the event stream", err)
	delta.openStream(h.c.PublicKey())
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](
		`document.querySelectorAll("#netmap circle.node.online").length === 3 && document.querySelectorAll("#netmap line.path.direct").length === 3`,
		chromedp.WithPollingTimeout(10*time.Second)))
	must("live update after delta came online", err)
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("map-status")))
	must("map status", err)
	if !strings.HasPrefix(status, "Live: 4 agents, 3 online, 3 paths") {
		t.Errorf("map status %q", status)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must("screenshot", err)
	stop()

	path := filepath.Join(t.TempDir(), "console-map.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
	if p := os.Getenv("AGENTNET_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Errorf("AGENTNET_SCREENSHOT: %v", err)
		}
		t.Logf("screenshot also at %s", p)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	colours := make(map[[4]uint32]bool)
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, bl, a}] = true
		}
	}
	if len(shot) < 20<<10 || len(colours) < 50 || b.Dx() < 800 || b.Dy() < 600 {
		t.Errorf("screenshot looks trivial: %d bytes, %dx%d, %d colours", len(shot), b.Dx(), b.Dy(), len(colours))
	}

	// No chromium process of this profile may outlive the test.
	deadline := time.Now().Add(3 * time.Second)
	for {
		left := processesWith(profile)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("chromium processes still running: %v", left)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("browser test took %v, budget 30s", d)
	}
}

// processesWith returns the pids whose command line mentions s.
func processesWith(s string) []string {
	var pids []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmd, []byte(s)) {
			pids = append(pids, d.Name())
		}
	}
	return pids
}
