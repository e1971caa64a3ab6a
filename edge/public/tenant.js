// The tenant view: reads what a token may watch (its `analyses` claim, decoded here
// for display only: the edge verifies it) and links to the dashboard of each.
const ID = /^[A-Za-z0-9_-]{1,64}$/;
const $ = (id) => document.getElementById(id);

/** The token's claims, or null when it is not a JWT. */
function claims(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json);
  } catch {
    return null;
  }
}

/** The dashboard's address; the token rides in the fragment, which browsers never send. */
function dashboardUrl(id, token) {
  return `/analysis?id=${encodeURIComponent(id)}#token=${encodeURIComponent(token)}`;
}

/** The pool page's address, the token in the fragment as for the dashboard. */
function poolUrl(name, token) {
  return `/pool?name=${encodeURIComponent(name)}#token=${encodeURIComponent(token)}`;
}

function showGrants(token) {
  const c = claims(token);
  const list = $("grants-list");
  list.replaceChildren();
  $("pools").hidden = !String(c?.scope ?? "").split(/\s+/).includes("admin");
  if (!c) {
    $("grants").hidden = true;
    return;
  }
  $("grants").hidden = false;
  const expires = c.exp ? new Date(c.exp * 1000).toLocaleString() : "never";
  $("grants-who").textContent = `Tenant ${c.iss ?? "?"}, subject ${c.sub ?? "?"}, expires ${expires}.`;
  for (const id of c.analyses ?? []) {
    const li = document.createElement("li");
    if (id === "*") {
      li.textContent = "every analysis of the tenant: enter an id above";
    } else {
      const a = document.createElement("a");
      a.href = dashboardUrl(id, token);
      a.textContent = id;
      li.append(a);
    }
    list.append(li);
  }
}

function init() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const token = fragment.get("token") ?? query.get("token") ?? "";
  $("token").value = token;
  $("analysis").value = query.get("id") ?? "";
  if (token) showGrants(token);
  $("token").addEventListener("input", (e) => showGrants(e.target.value.trim()));
  $("open").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    let id = $("analysis").value.trim();
    const granted = (claims(token)?.analyses ?? []).filter((a) => a !== "*");
    if (!id && granted.length === 1) id = granted[0];
    if (!ID.test(id)) {
      $("form-error").hidden = false;
      $("form-error").textContent = "Enter an analysis id: 1 to 64 letters, digits, _ or -.";
      $("analysis").focus();
      return;
    }
    location.href = dashboardUrl(id, token);
  });
  $("open-pool").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("pool").value.trim();
    if (!ID.test(name)) {
      $("pool").focus();
      return;
    }
    location.href = poolUrl(name, $("token").value.trim());
  });
}

init();
