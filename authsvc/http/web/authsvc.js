// authsvc browser client: one ES module, no dependencies, no build step.
//
//   import { Authsvc } from "https://auth.example.com/client/authsvc.js";
//   const auth = new Authsvc({ baseUrl: "https://auth.example.com" });
//   await auth.login("alice", "correct horse battery staple");
//   const response = await auth.fetch("https://api.example.com/things");
//
// Cookie mode (docs/browsers.md): the refresh token lives in authsvc's httpOnly cookie
// `__Host-authsvc-refresh`, which no script reads. The access token is kept in memory only.
// The session's csrf_token is kept in localStorage as well, so that a reloaded or new tab
// can refresh: it is useless without the cookie (authsvc checks both, and the Origin), and a
// script that could read localStorage could read this module's memory too.
//
// Tabs of one origin share ONE refresh: a Web Lock (navigator.locks) around every refresh,
// and a BroadcastChannel on which the tab that refreshed hands its new access token to the
// others, so a tab that was waiting for the lock adopts that token instead of refreshing
// again with a cookie that has just been rotated.

const REFRESH_PATH = "/v1/auth/refresh";
// Refresh this long before the access token expires (at most a tenth of its lifetime).
const REFRESH_MARGIN_MS = 30_000;
// How long a tab waits for the result another tab announced before refreshing itself.
const PEER_WAIT_MS = 10_000;

/** An answer of authsvc that is not a success: its status and the contract's error code. */
export class AuthsvcError extends Error {
  constructor(status, error, description) {
    super(description || error || `authsvc answered ${status}`);
    this.name = "AuthsvcError";
    this.status = status;
    this.error = error;
  }
}

/** The session is over (signed out here, in another tab, or refused by authsvc). */
export class SignedOut extends AuthsvcError {
  constructor(description = "not signed in") {
    super(401, "signed_out", description);
    this.name = "SignedOut";
  }
}

async function errorOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  return new AuthsvcError(response.status, body.error, body.error_description);
}

// A 401 is worth a refresh only when the access token was refused (`invalid_token`), not
// when a password was wrong (`invalid_credentials`: sending it again would count twice).
async function isTokenRefusal(response) {
  try {
    return (await response.clone().json()).error === "invalid_token";
  } catch {
    return false;
  }
}

export class Authsvc {
  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] authsvc's URL, e.g. "https://auth.example.com"
   *   ("" for the page's own origin).
   * @param {string} [options.device] a name for this device, shown in the session list.
   * @param {Storage|null} [options.storage] where the csrf_token survives a reload
   *   (localStorage by default; null keeps it in memory only, so a reload signs out).
   * @param {(reason: string) => void} [options.onSignedOut] called once the session is over.
   */
  constructor({ baseUrl = "", device, storage, onSignedOut } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.device = device;
    this.onSignedOut = onSignedOut;
    this._storage = storage === undefined ? globalThis.localStorage ?? null : storage;
    const scope = this.baseUrl || globalThis.location?.origin || "authsvc";
    this._key = `authsvc:${scope}`;
    this._lockName = `authsvc-refresh:${scope}`;
    this._accessToken = null;
    this._expiresAt = 0;
    this._sessionId = null;
    this._csrfToken = this._load();
    this._peer = null; // {promise, resolve} while another tab has announced a refresh
    this._ended = new Set(); // sessions this tab saw end
    this.refreshes = 0; // refresh requests this tab has sent (for tests and metrics)
    this._channel =
      typeof BroadcastChannel === "function" ? new BroadcastChannel(this._lockName) : null;
    if (this._channel) this._channel.onmessage = (event) => this._onMessage(event.data);
  }

  /** Whether this tab can act for a session (it holds a csrf_token, maybe no access token yet). */
  get signedIn() {
    return this._csrfToken !== null;
  }

  get sessionId() {
    return this._sessionId;
  }

  url(path) {
    return this.baseUrl + path;
  }

  // --- signing in and out ---------------------------------------------------------------

  /** Log in in cookie mode; resolves to the TokenPair (it has no refresh_token). */
  async login(username, password) {
    const body = { username, password, cookie: true };
    if (this.device) body.device = this.device;
    const response = await fetch(this.url("/v1/auth/login"), {
      method: "POST",
      credentials: "include",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw await errorOf(response);
    const pair = await response.json();
    this._adopt(pair);
    this._post({ type: "token", ...this._state() });
    return pair;
  }

  /** End this session (every tab of this origin signs out with it). */
  async logout() {
    await this._endWith("/v1/auth/logout", "logout");
  }

  /** End every session of the user, on every device. */
  async logoutAll() {
    await this._endWith("/v1/auth/logout-all", "logout-all");
  }

  async _endWith(path, reason) {
    // Under the refresh lock: a refresh in flight in another tab finishes first, so its
    // answer cannot arrive after this logout and be taken for a live session.
    await this._locked(async () => {
      try {
        // With the cookie, so that authsvc clears it.
        const init = { method: "POST", credentials: "include" };
        const response = await this.fetch(this.url(path), init, { locked: true });
        if (!response.ok && response.status !== 401) throw await errorOf(response);
      } catch (error) {
        // A refresh refused on the way (401, 403): the session is over already.
        if (!(error instanceof AuthsvcError) || ![401, 403].includes(error.status)) throw error;
      } finally {
        this._signedOut(reason, true);
      }
    });
  }

  _locked(task) {
    if (globalThis.navigator?.locks) return navigator.locks.request(this._lockName, task);
    return task(); // no Web Locks (an insecure context): this tab alone
  }

  // --- the access token -------------------------------------------------------------------

  /** A live access token: the one held, or a refresh's (shared with the other tabs). */
  async accessToken(options = {}) {
    if (this._accessToken && Date.now() < this._expiresAt - this._margin()) {
      return this._accessToken;
    }
    return this.refresh(options);
  }

  /**
   * Refresh now, once for every tab of the origin: resolves to the new access token.
   * A tab that waited for the lock while another refreshed adopts that tab's token.
   */
  async refresh({ locked = false } = {}) {
    if (!this.signedIn) throw new SignedOut();
    if (locked) return this._refreshNow(); // the caller holds the lock already
    const held = this._accessToken;
    const run = async () => {
      // Let the messages already queued for this tab run first: another tab's result may
      // have been posted just before it let the lock go.
      await new Promise((go) => setTimeout(go, 0));
      if (this._accessToken !== held && this._accessToken) return this._accessToken;
      if (this._peer) {
        // Another tab announced a refresh before this one got the lock: its result is
        // on the channel (messages of one sender arrive in order).
        await this._peer.promise;
        if (this._accessToken !== held && this._accessToken) return this._accessToken;
      }
      if (!this.signedIn) throw new SignedOut();
      return this._refreshNow();
    };
    return this._locked(run);
  }

  async _refreshNow() {
    this._post({ type: "refreshing" });
    let response;
    try {
      this.refreshes += 1;
      response = await fetch(this.url(REFRESH_PATH), {
        method: "POST",
        credentials: "include",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": this._csrfToken },
        body: "{}",
      });
    } catch (error) {
      this._post({ type: "refresh-failed" });
      throw error;
    }
    if (response.status === 401 || response.status === 403) {
      const error = await errorOf(response);
      this._signedOut(error.error || "refused", true);
      throw error;
    }
    if (!response.ok) {
      this._post({ type: "refresh-failed" });
      throw await errorOf(response);
    }
    this._adopt(await response.json());
    this._post({ type: "token", ...this._state() });
    return this._accessToken;
  }

  /**
   * fetch() with the access token: refreshed first when it is about to expire, and once
   * more when the answer is 401 `invalid_token` (expired in flight, or not fresh enough for
   * a sensitive call). Same arguments as fetch; `options.locked` is for a caller that holds
   * the refresh lock already.
   */
  async fetch(input, init = {}, options = {}) {
    const send = (token) => {
      const headers = new Headers(init.headers || {});
      headers.set("Authorization", `Bearer ${token}`);
      return fetch(input, { ...init, headers });
    };
    const token = await this.accessToken(options);
    const response = await send(token);
    if (response.status !== 401 || !(await isTokenRefusal(response))) return response;
    // The access token was refused (its session may just have been refreshed elsewhere,
    // or it is not fresh enough for a sensitive call): once more with a refreshed one.
    const fresh = await this.refresh(options);
    return send(fresh);
  }

  // --- the account --------------------------------------------------------------------------

  async _json(method, path, body) {
    const init = { method };
    if (body !== undefined) {
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify(body);
    }
    const response = await this.fetch(this.url(path), init);
    if (!response.ok) throw await errorOf(response);
    return response.status === 204 ? null : response.json();
  }

  /** `{user_id, username, session_id}` */
  me() {
    return this._json("GET", "/v1/auth/me");
  }

  /** The user's live sessions, `current` marking this one. */
  async sessions() {
    return (await this._json("GET", "/v1/auth/sessions")).sessions;
  }

  /** End one session (this one included: then this tab is signed out). */
  async endSession(sessionId) {
    await this._json("DELETE", `/v1/auth/sessions/${encodeURIComponent(sessionId)}`);
    if (sessionId === this._sessionId) this._signedOut("session-ended", true);
  }

  /** End every other session of the user, keeping this one. */
  async endOtherSessions() {
    const others = (await this.sessions()).filter((session) => !session.current);
    for (const session of others) await this.endSession(session.session_id);
    return others.length;
  }

  /** The account's security events, newest first. */
  async events() {
    return (await this._json("GET", "/v1/auth/events")).events;
  }

  /** A new password; every other session of the user ends, this one stays. */
  changePassword(currentPassword, newPassword) {
    return this._json("POST", "/v1/auth/password", {
      current_password: currentPassword,
      new_password: newPassword,
    });
  }

  // --- state shared between tabs --------------------------------------------------------

  _margin() {
    const lifetime = this._lifetime || 0;
    return Math.min(REFRESH_MARGIN_MS, lifetime / 10);
  }

  _adopt(pair) {
    this._accessToken = pair.access_token;
    this._lifetime = pair.expires_in * 1000;
    this._expiresAt = Date.now() + this._lifetime;
    this._sessionId = pair.session_id;
    if (pair.csrf_token) {
      this._csrfToken = pair.csrf_token;
      this._save(pair.csrf_token);
    }
  }

  _state() {
    return {
      access_token: this._accessToken,
      expires_in: Math.max(0, Math.floor((this._expiresAt - Date.now()) / 1000)),
      session_id: this._sessionId,
      csrf_token: this._csrfToken,
    };
  }

  _onMessage(message) {
    if (!message || typeof message !== "object") return;
    if (message.type === "refreshing") {
      if (!this._peer) {
        let resolve;
        const promise = new Promise((done) => {
          resolve = done;
        });
        // Never wait forever for a tab that was closed mid-refresh.
        const timer = setTimeout(() => this._settlePeer(), PEER_WAIT_MS);
        this._peer = { promise, resolve, timer };
      }
      return;
    }
    if (message.type === "token") {
      // A late answer for a session this tab saw end brings nothing back.
      if (!this._ended.has(message.session_id)) this._adopt(message);
    } else if (message.type === "signed-out") {
      this._signedOut(message.reason, false);
    }
    this._settlePeer(); // "token", "signed-out" and "refresh-failed" end a peer's refresh
  }

  _settlePeer() {
    if (!this._peer) return;
    clearTimeout(this._peer.timer);
    this._peer.resolve();
    this._peer = null;
  }

  _post(message) {
    this._channel?.postMessage(message);
  }

  _signedOut(reason, tell) {
    const was = this.signedIn || this._accessToken !== null;
    if (this._sessionId) this._ended.add(this._sessionId);
    this._accessToken = null;
    this._expiresAt = 0;
    this._sessionId = null;
    this._csrfToken = null;
    this._save(null);
    if (tell) this._post({ type: "signed-out", reason });
    if (was && this.onSignedOut) this.onSignedOut(reason);
  }

  _load() {
    try {
      return this._storage?.getItem(`${this._key}:csrf`) ?? null;
    } catch {
      return null; // storage refused (a sandboxed frame): memory only
    }
  }

  _save(value) {
    try {
      if (value === null) this._storage?.removeItem(`${this._key}:csrf`);
      else this._storage?.setItem(`${this._key}:csrf`, value);
    } catch {
      // storage refused: memory only
    }
  }
}
