// Package browser holds the web page's browser test: Debian's chromium,
// driven headless by chromedp, signs in through the local stack's Dex,
// finds a call, plays and seeks it. It is a module of its own so that
// chromedp is not a dependency of Verbatim. deploy/local/test.sh runs it.
package browser
