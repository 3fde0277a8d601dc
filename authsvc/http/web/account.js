// The account page (/account): the browser client in cookie mode, on authsvc's own origin.
// Everything the user or another device sent (user agents, device names) is written with
// textContent, never as HTML.
import { Authsvc, SignedOut } from "/client/authsvc.js";

const $ = (id) => document.getElementById(id);
const auth = new Authsvc({ device: thisDevice(), onSignedOut: () => showSignIn() });

const EVENTS = {
  login: "Signed in",
  login_failed: "Failed sign-in attempt",
  refresh_replay: "A stolen or replayed token ended a session",
  session_evicted: "Oldest session ended (too many sessions)",
  logout: "Signed out",
  logout_all: "Signed out everywhere",
  session_revoked: "Session ended",
  password_changed: "Password changed",
  account_disabled: "Account disabled",
  account_enabled: "Account enabled",
  roles_changed: "Roles changed",
};

/**
 * The browser and system of a User-Agent, simply. authsvc keeps its first 64 bytes (a
 * session's record stays small), which name the system but often not the browser: then
 * the engine says what it can (Gecko's rv:, WebKit's build).
 */
export function describeUserAgent(userAgent) {
  if (!userAgent) return { browser: "Unknown browser", system: "" };
  const ua = userAgent;
  const major = (pattern) => (ua.match(pattern) || [])[1]?.split(".")[0] || "";
  const named = (name, pattern) => `${name} ${major(pattern)}`.trim();
  let browser;
  if (/Edg\//.test(ua)) browser = named("Edge", /Edg\/([\d.]+)/);
  else if (/OPR\//.test(ua)) browser = named("Opera", /OPR\/([\d.]+)/);
  else if (/Firefox\//.test(ua)) browser = named("Firefox", /Firefox\/([\d.]+)/);
  else if (/HeadlessChrome\//.test(ua)) browser = named("Headless Chrome", /HeadlessChrome\/([\d.]+)/);
  else if (/Chrom(e|ium)\//.test(ua)) browser = named("Chrome", /Chrom(?:e|ium)\/([\d.]+)/);
  else if (/Version\/[\d.]+.*Safari\//.test(ua)) browser = named("Safari", /Version\/([\d.]+)/);
  else if (/rv:[\d.]+\) Gecko\//.test(ua)) browser = named("Firefox", /rv:([\d.]+)\)/);
  else if (/AppleWebKit\/537\.36/.test(ua)) browser = "Chrome-based browser";
  else if (/AppleWebKit\/6\d\d/.test(ua)) browser = "Safari";
  else if (/^Mozilla\//.test(ua)) browser = "";
  else browser = ua.split(/[\s/]/)[0] || "Unknown browser"; // curl/8.5, python-requests/2
  let system = "";
  if (/iPhone|iPad|iPod/.test(ua)) system = "iOS";
  else if (/Android/.test(ua)) system = "Android";
  else if (/Windows/.test(ua)) system = "Windows";
  else if (/CrOS/.test(ua)) system = "ChromeOS";
  else if (/Mac OS X|Macintosh/.test(ua)) system = "macOS";
  else if (/Linux/.test(ua)) system = "Linux";
  // Every browser on iOS is WebKit's, Safari most of all.
  if (!browser) browser = system === "iOS" ? "Safari" : "Web browser";
  return { browser, system };
}

/** What a session or an event was: its device's name, and what its User-Agent adds. */
function describeClient(device, userAgent) {
  const { browser, system } = describeUserAgent(userAgent);
  const parsed = system ? `${browser}, ${system}` : browser;
  if (!device) return { name: system || browser, detail: system ? browser : "" };
  // The account page names its device "Chrome 131 on macOS": nothing to add then.
  return { name: device, detail: system && device.includes(system) ? "" : parsed };
}

/** This browser, as the session list will name it ("Chrome 131 on macOS"). */
function thisDevice() {
  const { browser, system } = describeUserAgent(navigator.userAgent);
  return system ? `${browser} on ${system}` : browser;
}

function when(seconds) {
  const date = new Date(seconds * 1000);
  const ago = Math.round(Date.now() / 1000 - seconds);
  let relative;
  if (ago < 60) relative = "just now";
  else if (ago < 3600) relative = `${Math.floor(ago / 60)} min ago`;
  else if (ago < 86400) relative = `${Math.floor(ago / 3600)} h ago`;
  else relative = `${Math.floor(ago / 86400)} days ago`;
  return { text: relative, iso: date.toISOString(), title: date.toLocaleString() };
}

function setTime(element, seconds) {
  const t = when(seconds);
  element.textContent = t.text;
  element.dateTime = t.iso;
  element.title = t.title;
}

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

function showError(id, error) {
  const element = $(id);
  element.textContent = error ? error.message : "";
  element.hidden = !error;
}

function showSignIn() {
  $("account").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
}

async function showAccount() {
  const me = await auth.me();
  $("username").textContent = me.username;
  $("who").hidden = false;
  $("sign-in").hidden = true;
  $("account").hidden = false;
  await Promise.all([renderSessions(), renderEvents()]);
}

async function renderSessions() {
  const sessions = await auth.sessions();
  const list = $("sessions");
  const template = $("session-row");
  list.replaceChildren();
  sessions.sort((a, b) => Number(b.current) - Number(a.current) || b.last_used_at - a.last_used_at);
  for (const session of sessions) {
    const row = template.content.firstElementChild.cloneNode(true);
    const { name, detail } = describeClient(session.device, session.user_agent);
    row.dataset.sessionId = session.session_id;
    row.querySelector(".device").textContent = name;
    row.querySelector(".browser").textContent = detail;
    row.querySelector(".address").textContent = session.ip || "unknown address";
    setTime(row.querySelector(".last-used"), session.last_used_at);
    if (session.current) {
      row.classList.add("current");
      row.querySelector(".badge").hidden = false;
    }
    const end = row.querySelector(".end");
    end.textContent = session.current ? "Sign out" : "End";
    end.addEventListener("click", () => act(end, () => endSession(session)));
    list.append(row);
  }
  $("end-others").disabled = sessions.length < 2;
}

async function renderEvents() {
  const events = await auth.events();
  const list = $("events");
  const template = $("event-row");
  list.replaceChildren();
  for (const event of events) {
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.type = event.type;
    row.querySelector(".what").textContent = EVENTS[event.type] || event.type;
    setTime(row.querySelector(".when"), event.at);
    const client = describeClient(event.device, event.user_agent);
    const what = event.user_agent || event.device ? [client.name, client.detail] : [];
    const from = [event.ip, what.filter(Boolean).join(", ")].filter(Boolean).join(" · ");
    row.querySelector(".from").textContent = from ? ` · ${from}` : "";
    list.append(row);
  }
  if (events.length === 0) {
    const empty = document.createElement("li");
    empty.className = "row";
    empty.textContent = "Nothing yet.";
    list.append(empty);
  }
}

async function endSession(session) {
  if (session.current) {
    await auth.logout();
    notice("Signed out.");
    return;
  }
  await auth.endSession(session.session_id);
  notice("The session has ended: its tokens no longer work.");
  await Promise.all([renderSessions(), renderEvents()]);
}

/** Run an action from a button: disabled meanwhile, errors shown, sign-in when signed out. */
async function act(button, action) {
  button.disabled = true;
  try {
    await action();
  } catch (error) {
    if (error instanceof SignedOut || error.status === 401) showSignIn();
    notice(error.message);
  } finally {
    button.disabled = false;
  }
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  showError("sign-in-error", null);
  try {
    await auth.login(form.username.value, form.password.value);
    form.reset();
    notice("");
    await showAccount();
  } catch (error) {
    showError("sign-in-error", error);
  }
});

$("password-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  showError("password-error", null);
  if (form.new.value !== form.again.value) {
    showError("password-error", new Error("The new passwords differ."));
    return;
  }
  try {
    await auth.changePassword(form.current.value, form.new.value);
    form.reset();
    notice("Password changed. Every other session has ended.");
    await Promise.all([renderSessions(), renderEvents()]);
  } catch (error) {
    showError("password-error", error);
  }
});

$("end-others").addEventListener("click", (event) =>
  act(event.currentTarget, async () => {
    const ended = await auth.endOtherSessions();
    notice(`${ended} other session${ended === 1 ? "" : "s"} ended.`);
    await Promise.all([renderSessions(), renderEvents()]);
  }),
);

$("sign-out-everywhere").addEventListener("click", (event) =>
  act(event.currentTarget, async () => {
    await auth.logoutAll();
    notice("Signed out everywhere.");
  }),
);

$("sign-out").addEventListener("click", (event) =>
  act(event.currentTarget, async () => {
    await auth.logout();
    notice("Signed out.");
  }),
);

// A tab reloaded (or a new one) resumes the session through the cookie, if there is one.
if (auth.signedIn) {
  showAccount().catch(() => showSignIn());
} else {
  showSignIn();
}
