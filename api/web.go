package api

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

//go:embed web
var webFiles embed.FS

// WebConfig lets people sign in to the web page: the authorisation code
// flow with PKCE against the issuer, run by the server (the browser never
// holds a token; it gets an encrypted, HttpOnly session cookie).
type WebConfig struct {
	// OAuth2 is the confidential client: its id and secret, the issuer's
	// endpoints, the redirect URL (https://HOST/auth/callback) and the
	// scopes ("openid email profile groups").
	OAuth2 oauth2.Config
	// HTTPClient reaches the issuer (its CA); default http.DefaultClient.
	HTTPClient *http.Client
	// SessionKey, 32 bytes, seals the session cookies. API servers behind
	// one address share it, so that a session begun on one is valid on
	// the others and outlives a restart. Empty: a key of this process's
	// own, so sessions end when it stops.
	SessionKey []byte
}

const (
	sessionCookie = "verbatim_session"
	loginCookie   = "verbatim_login"
	// csrfHeader must accompany a request that changes data when it is
	// authenticated by the session cookie: a page of another site cannot
	// send it without the server's consent (CORS), so the cookie alone
	// never changes anything.
	csrfHeader = "X-Verbatim-Request"
)

// cookieBox seals cookies under a key that lives only in this process:
// restarting the server signs everybody out.
type cookieBox struct{ aead cipher.AEAD }

func newCookieBox(key []byte) (*cookieBox, error) {
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := io.ReadFull(rand.Reader, key); err != nil {
			return nil, err
		}
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("api: the session key is %d bytes, not 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &cookieBox{aead: aead}, nil
}

func (b *cookieBox) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

func (b *cookieBox) open(name, s string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) < b.aead.NonceSize() {
		return errors.New("api: cookie malformed")
	}
	plain, err := b.aead.Open(nil, raw[:b.aead.NonceSize()], raw[b.aead.NonceSize():], []byte(name))
	if err != nil {
		return errors.New("api: cookie not ours")
	}
	return json.Unmarshal(plain, v)
}

type loginState struct {
	State, Verifier string
	Expires         time.Time
}

type session struct {
	IDToken string
}

func setCookie(w http.ResponseWriter, name, value, path string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: int(maxAge.Seconds()), HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode})
}

// registerWeb adds the page and its sign-in.
func (s *Server) registerWeb() {
	static, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded directory is part of the build
	}
	files := http.FileServer(http.FS(static))
	s.mux.Handle("GET /{$}", files)
	s.mux.Handle("GET /app.js", files)
	s.mux.Handle("GET /app.css", files)
	if s.cfg.Web == nil {
		return
	}
	s.mux.HandleFunc("GET /auth/login", s.login)
	s.mux.HandleFunc("GET /auth/callback", s.callback)
	s.mux.HandleFunc("POST /auth/logout", func(w http.ResponseWriter, r *http.Request) {
		setCookie(w, sessionCookie, "", "/", -time.Second)
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
}

// login sends the browser to the issuer, with a fresh state and PKCE
// verifier kept in a sealed cookie for the callback.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	st := loginState{State: oauth2.GenerateVerifier(), Verifier: oauth2.GenerateVerifier(), Expires: time.Now().Add(10 * time.Minute)}
	c, err := s.cookies.seal(loginCookie, st)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "sign-in could not start")
		return
	}
	setCookie(w, loginCookie, c, "/auth/", 10*time.Minute)
	http.Redirect(w, r, s.cfg.Web.OAuth2.AuthCodeURL(st.State, oauth2.S256ChallengeOption(st.Verifier)), http.StatusFound)
}

// callback exchanges the issuer's code (with the PKCE verifier), verifies
// the ID token as every API request is, and starts the session.
func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, code, msg string) {
		if err := s.cfg.Audit.Record(r.Context(), event(r, "session.signin", nil, "", &apiError{status, code, msg})); err != nil {
			s.cfg.Logger.Error("audit event of a refused sign-in not written", "err", err)
		}
		writeError(w, status, code, msg)
	}
	lc, err := r.Cookie(loginCookie)
	var st loginState
	if err != nil || s.cookies.open(loginCookie, lc.Value, &st) != nil || time.Now().After(st.Expires) {
		refuse(http.StatusBadRequest, "bad_request", "no sign-in in progress from this browser (or it took more than 10 minutes): start again at /auth/login")
		return
	}
	setCookie(w, loginCookie, "", "/auth/", -time.Second)
	if e := r.URL.Query().Get("error"); e != "" {
		refuse(http.StatusUnauthorized, "unauthenticated", "the identity provider refused the sign-in: "+e+" "+r.URL.Query().Get("error_description"))
		return
	}
	if r.URL.Query().Get("state") != st.State {
		refuse(http.StatusBadRequest, "bad_request", "the sign-in's state does not match this browser's")
		return
	}
	ctx := r.Context()
	if s.cfg.Web.HTTPClient != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, s.cfg.Web.HTTPClient)
	}
	tok, err := s.cfg.Web.OAuth2.Exchange(ctx, r.URL.Query().Get("code"), oauth2.VerifierOption(st.Verifier))
	if err != nil {
		refuse(http.StatusUnauthorized, "unauthenticated", "the code could not be exchanged: "+err.Error())
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	id, err := s.cfg.Verifier.Verify(r.Context(), raw)
	if err != nil {
		refuse(http.StatusUnauthorized, "unauthenticated", err.Error())
		return
	}
	if err := s.cfg.Audit.Record(r.Context(), event(r, "session.signin", &id, "", nil)); err != nil {
		writeError(w, http.StatusServiceUnavailable, "audit_unavailable", "the audit log cannot be written, so nobody signs in")
		return
	}
	c, err := s.cookies.seal(sessionCookie, session{IDToken: raw})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "the session could not be made")
		return
	}
	setCookie(w, sessionCookie, c, "/", time.Until(id.Expiry))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// sessionToken is the ID token of the request's session cookie, if any.
func (s *Server) sessionToken(r *http.Request) (string, bool) {
	if s.cookies == nil {
		return "", false
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", false
	}
	var sess session
	if s.cookies.open(sessionCookie, c.Value, &sess) != nil || sess.IDToken == "" {
		return "", false
	}
	return sess.IDToken, true
}
