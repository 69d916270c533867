// snapdeploy's web console: pages over the CloudStack API, called in a login session.
"use strict";

const USER_KEY = "snapdeploy.user";
const session = { key: "", user: null, info: null };
let streams = [];
let generation = 0;  // counts renders: a page shows only if no render began after it  // the EventSources the current page holds, closed when it changes

// ---- small helpers ------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

function state(text) {
  return h("span", { class: `state state-${text}` }, text || "-");
}

function gb(bytes) {
  return bytes ? `${(bytes / 1024 ** 3).toFixed(1)} GB` : "-";
}

function when(text) {
  return text ? text.replace("T", " ").replace(/\+0000$/, "") : "-";
}

class ApiError extends Error {
  constructor(code, text) { super(text); this.code = code; }
}

// ---- the API, in the session ---------------------------------------------------------------

async function api(command, params = {}) {
  const body = new URLSearchParams({ command, response: "json" });
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") body.set(k, v);
  }
  if (command !== "login") body.set("sessionkey", session.key);
  const response = await fetch("/client/api", { method: "POST", body, credentials: "same-origin" });
  let answer = {};
  try { answer = Object.values(await response.json())[0] || {}; } catch (_) { /* not JSON */ }
  if (!response.ok || answer.errorcode) {
    const text = answer.errortext || `${command} failed (HTTP ${response.status})`;
    if (response.status === 401 && command !== "login") {
      forget();
      loginPage("Your session has ended; log in again.");
    }
    throw new ApiError(answer.errorcode || response.status, text);
  }
  return answer;
}

async function consoleGet(path, params = {}) {
  const query = new URLSearchParams({ ...params, sessionkey: session.key });
  const response = await fetch(`/client/console/${path}?${query}`, { credentials: "same-origin" });
  const answer = Object.values(await response.json())[0] || {};
  if (!response.ok) throw new ApiError(answer.errorcode || response.status, answer.errortext);
  return answer;
}

// Waits for an asynchronous job; its result, or ApiError with the job's error text.
async function job(jobid) {
  for (;;) {
    const result = await api("queryAsyncJobResult", { jobid });
    if (result.jobstatus === 1) return result.jobresult || {};
    if (result.jobstatus === 2) {
      const failed = result.jobresult || {};
      throw new ApiError(failed.errorcode || 530, failed.errortext || "the job failed");
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function streamInfo() {
  if (!session.info) session.info = await consoleGet("stream-info");
  return session.info;
}

// Follows /client/events from ``after``; ``onEvent`` gets each envelope.
async function follow(after, onEvent) {
  const info = await streamInfo();
  const query = new URLSearchParams({ sessionkey: session.key, after: String(after) });
  const source = new EventSource(`/client/events?${query}`);
  for (const type of info.eventtypes) {
    source.addEventListener(type, (message) => onEvent(JSON.parse(message.data)));
  }
  streams.push(source);
  return source;
}

// ---- session -------------------------------------------------------------------------------

function forget() {
  session.key = ""; session.user = null; session.info = null;
  localStorage.removeItem(USER_KEY);
}

function resume() {
  session.key = cookie("sessionkey");
  try { session.user = JSON.parse(localStorage.getItem(USER_KEY) || "null"); } catch (_) { session.user = null; }
  return Boolean(session.key && session.user);
}

const isAdmin = () => Boolean(session.user && Number(session.user.type) === 1);

function loginPage(message) {
  generation += 1;  // no page that was loading replaces the login form
  closeStreams();
  document.getElementById("top").hidden = true;
  const error = h("p", { class: "error", id: "login-error", role: "alert", hidden: !message }, message || "");
  const form = h("form", { class: "login", id: "login-form", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Log in to snapdeploy"),
    error,
    h("label", { for: "username" }, "Username"),
    h("input", { id: "username", name: "username", autocomplete: "username", required: true }),
    h("label", { for: "password" }, "Password"),
    h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true }),
    h("label", { for: "domain" }, "Domain"),
    h("input", { id: "domain", name: "domain", placeholder: "ROOT (optional)" }),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit", id: "login-submit" }, "Log in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    try {
      const answer = await api("login", {
        username: form.username.value, password: form.password.value, domain: form.domain.value,
      });
      session.key = answer.sessionkey;
      session.user = { username: answer.username, account: answer.account, type: answer.type, userid: answer.userid };
      localStorage.setItem(USER_KEY, JSON.stringify(session.user));
      if (!location.hash || location.hash === "#/login") location.hash = "#/instances";
      else render();
    } catch (exc) {
      error.textContent = exc.code === 401
        ? `Wrong username or password. ${exc.message}` : exc.message;
      error.hidden = false;
    }
  });
  const main = document.getElementById("main");
  main.replaceChildren(form);
  form.username.focus();
}

async function logout() {
  try { await api("logout"); } catch (_) { /* ended anyway */ }
  forget();
  location.hash = "#/login";
  loginPage("You have logged out.");
}

// ---- page furniture ------------------------------------------------------------------------

function closeStreams() {
  for (const source of streams) source.close();
  streams = [];
}

// Shows a page, unless another was asked for since ``gen`` (a slower, older one never
// replaces a newer one).
function page(gen, title, ...body) {
  const main = document.getElementById("main");
  if (gen !== generation) return main;
  main.replaceChildren(h("h1", { id: "page-title" }, title), h("div", { id: "flash", role: "status" }), ...body);
  return main;
}

function flash(text, bad = false) {
  const area = document.getElementById("flash");
  if (area) area.replaceChildren(h("p", { class: bad ? "error" : "note" }, text));
}

function table(id, columns, rows, emptyText = "Nothing to show.") {
  if (!rows.length) return h("div", { class: "table-wrap", id }, h("p", { class: "empty" }, emptyText));
  return h("div", { class: "table-wrap" },
    h("table", { id },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.cls }, c.label)))),
      h("tbody", {}, rows.map((row) => h("tr", { "data-id": row.id || row.jobid || "" },
        columns.map((c) => h("td", { class: c.cls, "data-label": c.label }, c.cell(row))))))));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// A modal form: ``fields`` are its controls; ``onSubmit(form, dialog)`` may throw (the error is
// shown in the dialog) or return "keep" to leave it open with what it put there.
function dialog({ title, fields, submit = "OK", danger = false, onSubmit }) {
  const box = document.getElementById("dialog");
  const error = h("p", { class: "error", role: "alert", hidden: true, id: "dialog-error" });
  const form = h("form", { method: "dialog", id: "dialog-form" },
    h("h2", { id: "dialog-title" }, title), error, fields,
    h("div", { class: "buttons" },
      h("button", { type: "button", id: "dialog-cancel", onclick: () => box.close() }, "Cancel"),
      h("button", { type: "submit", id: "dialog-submit", class: danger ? "danger" : "primary" }, submit)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("#dialog-submit");
    button.disabled = true;
    error.hidden = true;
    try {
      if (await onSubmit(form, box) !== "keep") box.close();
    } catch (exc) {
      error.textContent = exc.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  box.replaceChildren(form);
  box.showModal();
  return box;
}

function confirmDialog(title, text, action, onDone) {
  dialog({
    title, fields: h("p", {}, text), submit: action, danger: true,
    onSubmit: async () => { await onDone(); },
  });
}

// ---- instances -----------------------------------------------------------------------------

async function instancesPage() {
  const gen = generation;
  const vms = (await api("listVirtualMachines", { listall: "true" })).virtualmachine || [];
  const filter = h("input", { id: "filter", type: "search", placeholder: "name, zone, host, offering" });
  const states = [...new Set(vms.map((v) => v.state))].sort();
  const stateFilter = h("select", { id: "state-filter" }, h("option", { value: "" }, "All states"),
    states.map((s) => h("option", { value: s }, s)));
  const holder = h("div", {});
  const columns = [
    { label: "Name", cell: (v) => h("a", { href: `#/instances/${v.id}`, class: "vm-link" }, v.name) },
    { label: "State", cell: (v) => state(v.state) },
    { label: "Zone", cell: (v) => `${v.zonename || v.zoneid} (${v.hypervisor})` },
    { label: "Host", cell: (v) => v.hostname || "-", cls: "hide-narrow" },
    { label: "Offering", cell: (v) => v.serviceofferingname || "-" },
    { label: "CPU / memory", cell: (v) => `${v.cpunumber} × ${v.cpuspeed} MHz, ${v.memory} MB`, cls: "hide-narrow" },
    { label: "Account", cell: (v) => v.account, cls: "hide-narrow" },
  ];
  const draw = () => {
    const words = filter.value.trim().toLowerCase();
    const shown = vms.filter((v) => (!stateFilter.value || v.state === stateFilter.value) &&
      (!words || [v.name, v.zonename, v.hostname, v.serviceofferingname, v.state, v.account]
        .join(" ").toLowerCase().includes(words)));
    holder.replaceChildren(table("instances", columns, shown, "No instances."));
  };
  filter.addEventListener("input", draw);
  stateFilter.addEventListener("change", draw);
  page(gen, "Instances",
    h("div", { class: "toolbar" },
      h("div", {}, h("label", { for: "filter" }, "Filter"), filter),
      h("div", {}, h("label", { for: "state-filter" }, "State"), stateFilter),
      h("button", { type: "button", onclick: render }, "Refresh")),
    holder);
  draw();
}

async function findVm(id) {
  const vms = (await api("listVirtualMachines", { id })).virtualmachine || [];
  if (!vms.length) throw new ApiError(431, `No instance ${id} is visible to your account.`);
  return vms[0];
}

async function instancePage(id) {
  const gen = generation;
  const vm = await findVm(id);
  const [volumes, events] = await Promise.all([
    api("listVolumes", { virtualmachineid: id }).then((r) => r.volume || []),
    api("listEvents", { keyword: vm.name, pagesize: "50" }).then((r) => r.event || [], () => []),
  ]);
  const power = (command, label) => h("button", {
    type: "button", onclick: async () => {
      try { await job((await api(command, { id })).jobid); await render(); flash(`${label}: done.`); }
      catch (exc) { flash(exc.message, true); }
    },
  }, label);
  page(gen, `Instance ${vm.name}`,
    h("div", { class: "actions" },
      h("a", { class: "button", href: `#/instances/${id}/snapshots`, id: "open-snapshots" }, "VM snapshots"),
      h("button", { type: "button", id: "take-snapshot", onclick: () => takeSnapshot(vm) }, "Take VM snapshot"),
      vm.state === "Stopped" ? power("startVirtualMachine", "Start") : null,
      vm.state === "Running" ? power("stopVirtualMachine", "Stop") : null,
      vm.state === "Running" ? power("rebootVirtualMachine", "Reboot") : null),
    h("h2", {}, "Details"),
    facts([
      ["Name", vm.name], ["ID", vm.id], ["State", state(vm.state)],
      ["Zone", `${vm.zonename || vm.zoneid} (${vm.hypervisor})`], ["Host", vm.hostname],
      ["Offering", vm.serviceofferingname], ["CPU", `${vm.cpunumber} × ${vm.cpuspeed} MHz`],
      ["Memory", `${vm.memory} MB`], ["Instance name", vm.instancename],
      ["Deployed from VM snapshot", vm.vmsnapshotid], ["Template", vm.templatename],
      ["Account", vm.account], ["Created", when(vm.created)], ["Error", vm.errortext],
    ]),
    h("h2", {}, "Volumes"),
    table("vm-volumes", [
      { label: "Name", cell: (v) => v.name }, { label: "Type", cell: (v) => v.type },
      { label: "State", cell: (v) => state(v.state) }, { label: "Size", cell: (v) => gb(v.size) },
      { label: "Storage pool", cell: (v) => v.storage || v.storageid },
    ], volumes, "No volumes."),
    h("h2", {}, "NICs"),
    table("vm-nics", [
      { label: "Network", cell: (n) => n.networkname || n.networkid },
      { label: "MAC", cell: (n) => n.macaddress }, { label: "IP address", cell: (n) => n.ipaddress || "-" },
      { label: "Default", cell: (n) => (n.isdefault ? "yes" : "no") },
    ], vm.nic || [], "No NICs."),
    h("h2", {}, "Events"),
    table("vm-events", [
      { label: "Time", cell: (e) => when(e.created) }, { label: "Type", cell: (e) => e.type },
      { label: "Level", cell: (e) => e.level }, { label: "Description", cell: (e) => e.description },
      { label: "User", cell: (e) => e.username || "-", cls: "hide-narrow" },
    ], events, "No events."));
}

function takeSnapshot(vm, after) {
  dialog({
    title: `Take a VM snapshot of ${vm.name}`,
    fields: [
      h("label", { for: "snapshot-name" }, "Name"),
      h("input", { id: "snapshot-name", name: "name", required: true, value: `${vm.name}-snap` }),
      h("label", { for: "snapshot-description" }, "Description"),
      h("input", { id: "snapshot-description", name: "description" }),
      h("label", { class: "inline", for: "snapshot-memory" },
        h("input", { type: "checkbox", id: "snapshot-memory", name: "memory" }), "Include the memory (running VM)"),
    ],
    submit: "Take snapshot",
    onSubmit: async (form) => {
      const taken = await api("createVMSnapshot", {
        virtualmachineid: vm.id, name: form.name.value, description: form.description.value,
        snapshotmemory: form.memory.checked ? "true" : "false",
      });
      await job(taken.jobid);
      if (after) after(); else location.hash = `#/instances/${vm.id}/snapshots`;
    },
  });
}

// ---- the VM's snapshot tree ------------------------------------------------------------------

async function snapshotsPage(id, selected) {
  const gen = generation;
  const vm = await findVm(id);
  const snaps = (await api("listVMSnapshot", { virtualmachineid: id })).vmSnapshot || [];
  const byParent = new Map();
  const ids = new Set(snaps.map((s) => s.id));
  for (const s of snaps.sort((a, b) => (a.created || "").localeCompare(b.created || ""))) {
    const parent = s.parent && ids.has(s.parent) ? s.parent : "";
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(s);
  }
  const panel = h("div", { class: "panel", id: "snapshot-panel" },
    h("p", { class: "note" }, "Choose a VM snapshot to see it and act on it."));
  const buttons = [];
  const choose = (s, button) => {
    for (const b of buttons) b.classList.toggle("selected", b === button);
    snapshotPanel(panel, vm, s);
  };
  const branch = (parent) => h("ul", {}, (byParent.get(parent) || []).map((s) => {
    const button = h("button", {
      type: "button", class: "node", "data-snapshot": s.name, "aria-label": `VM snapshot ${s.name}`,
    }, s.name, s.current ? h("span", { class: "badge current" }, "current") : null,
      s.type === "DiskAndMemory" ? h("span", { class: "badge memory" }, "memory") : null,
      h("span", { class: "note" }, ` ${s.cpunumber} CPU, ${s.memory} MB`));
    button.addEventListener("click", () => choose(s, button));
    buttons.push(button);
    return h("li", {}, button, byParent.has(s.id) ? branch(s.id) : null);
  }));
  const tree = snaps.length ? branch("") : h("p", { class: "empty" }, "This VM has no VM snapshots.");
  tree.classList.add("tree");
  tree.id = "snapshot-tree";
  page(gen, `VM snapshots of ${vm.name}`,
    h("div", { class: "toolbar" },
      h("a", { href: `#/instances/${id}` }, `← ${vm.name}`),
      h("button", { type: "button", id: "take-snapshot", onclick: () => takeSnapshot(vm, render) }, "Take VM snapshot")),
    h("div", { class: "split" }, tree, panel));
  const pick = selected || snaps.find((s) => s.current);
  const index = snaps.length ? buttons.findIndex((b) => b.dataset.snapshot === (pick && pick.name)) : -1;
  if (index >= 0) buttons[index].click();
}

function snapshotPanel(panel, vm, s) {
  const done = async (text) => { await render(); flash(text); };
  panel.replaceChildren(
    h("h2", { id: "snapshot-title" }, `VM snapshot ${s.name}`),
    facts([
      ["ID", s.id], ["State", state(s.state)], ["Created", when(s.created)],
      ["Current", s.current ? "yes (the VM runs from it)" : "no"],
      ["Memory", s.type === "DiskAndMemory" ? "included" : "disks only"],
      ["CPU at snapshot time", String(s.cpunumber)], ["Memory at snapshot time", `${s.memory} MB`],
      ["Description", s.description], ["Parent", s.parentName || s.parent],
    ]),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", id: "deploy-from-snapshot", onclick: () => deployDialog(vm, s) },
        "Deploy VM from VM snapshot"),
      h("button", {
        type: "button", id: "create-template", onclick: () => dialog({
          title: `Create a template from ${s.name}`,
          fields: h("p", {}, "The snapshot is seeded once as a template on its own pool; later deploys are linked clones of it."),
          submit: "Create template",
          onSubmit: async () => {
            const made = await api("prepareTemplate", { vmsnapshotid: s.id });
            const template = made.template || (made.jobid ? (await job(made.jobid)).template : null) || {};
            await done(`Template ${template.name || ""} is ready.`);
          },
        }),
      }, "Create template"),
      h("button", { type: "button", id: "create-volume", onclick: () => volumeDialog(vm, s, done) }, "Create volume"),
      h("button", {
        type: "button", id: "revert-snapshot", onclick: () => confirmDialog(`Revert ${vm.name} to ${s.name}?`,
          `The VM's disks${s.type === "DiskAndMemory" ? " and memory" : ""} return to how they were at ${s.name}; what changed since is lost.`,
          "Revert", async () => { await job((await api("revertToVMSnapshot", { vmsnapshotid: s.id })).jobid); await done(`${vm.name} was reverted to ${s.name}.`); }),
      }, "Revert to this snapshot"),
      h("button", {
        type: "button", class: "danger", id: "delete-snapshot", onclick: () => confirmDialog(`Delete VM snapshot ${s.name}?`,
          "The snapshot is removed for good; VMs deployed from it keep running.",
          "Delete", async () => { await job((await api("deleteVMSnapshot", { vmsnapshotid: s.id })).jobid); await done(`VM snapshot ${s.name} was deleted.`); }),
      }, "Delete")));
}

async function volumeDialog(vm, s, done) {
  const volumes = (await api("listVolumes", { virtualmachineid: vm.id })).volume || [];
  dialog({
    title: `Create a volume from ${s.name}`,
    fields: [
      h("label", { for: "volume-source" }, "Disk of the snapshot"),
      h("select", { id: "volume-source", name: "source", required: true },
        volumes.map((v) => h("option", { value: v.id }, `${v.name} (${v.type}, ${gb(v.size)})`))),
      h("label", { for: "volume-name" }, "Name of the new volume"),
      h("input", { id: "volume-name", name: "name", required: true, value: `${vm.name}-${s.name}-volume` }),
    ],
    submit: "Create volume",
    onSubmit: async (form) => {
      const made = await api("createVolume", { vmsnapshotid: s.id, volumeid: form.source.value, name: form.name.value });
      await job(made.jobid);
      await done(`Volume ${form.name.value} was created.`);
    },
  });
}

// ---- deploy from a VM snapshot ---------------------------------------------------------------

function hostName(text) {
  const name = text.replace(/[^A-Za-z0-9-]+/g, "-").replace(/-+/g, "-").replace(/^[^A-Za-z]+/, "")
    .slice(0, 63).replace(/-+$/, "");
  return name || "vm-copy";
}

const names = new Map();  // id -> name of what the deploy dialog listed
const named = (id) => names.get(id) || id;

const STEPS = {
  VmDeployRequested: () => "Deploy requested",
  JobSubmitted: () => "Job submitted",
  CapacityReserved: () => "Capacity reserved on the host",
  VmAwaitingTemplate: () => "Waiting for the snapshot's template",
  VmPlaced: (d) => `Placed on host ${named(d.host_id)}`,
  TemplateSeedStarted: (d) => `Seeding the snapshot as template ${d.name}`,
  TemplateSeeded: () => "Template seeded on the snapshot's pool",
  VmSourceReady: () => "Template ready to clone",
  VmCreated: (d) => `VM created (${d.linked ? "linked clone" : "full clone"})`,
  NicCreated: (d) => `NIC added on network ${named(d.nic && d.nic.network_id)}`,
  VolumeCreated: () => "Root volume recorded",
  AddressesAllocated: () => "IP addresses allocated",
  VmStarted: () => "VM powered on",
  VmDeployFailed: (d) => `Failed at step ${d.step}: ${d.reason}`,
  JobCompleted: (d) => (d.succeeded ? "Job completed" : `Job failed: ${d.error_text || ""}`),
};

async function deployDialog(vm, s) {
  const [options, networks] = await Promise.all([
    consoleGet("deploy-options", { vmsnapshotid: s.id }),
    api("listNetworks", { zoneid: vm.zoneid }).then((r) => r.network || []),
  ]);
  for (const x of [...options.host, ...networks]) names.set(x.id, x.name);
  const offerings = options.serviceoffering || [];
  const firstAllowed = offerings.find((o) => o.allowed);
  const fields = [
    h("p", { class: "note" }, `From ${vm.name} / ${s.name}: ${options.cpunumber} CPU, ${options.memory} MB at snapshot time. The zone and the source are the snapshot's.`),
    h("label", { for: "deploy-name" }, "Name"),
    h("input", { id: "deploy-name", name: "name", required: true, maxlength: "63", value: hostName(`${vm.name}-${s.name}-copy`) }),
    h("label", { for: "deploy-offering" }, "Compute offering"),
    h("select", { id: "deploy-offering", name: "offering", required: true },
      offerings.map((o) => h("option", {
        value: o.id, disabled: !o.allowed, selected: o === firstAllowed, title: o.reason || null,
      }, `${o.name} (${o.cpunumber} CPU, ${o.memory} MB)${o.allowed ? "" : " — not available"}`))),
    h("div", { id: "offering-reasons" }, offerings.filter((o) => !o.allowed).map((o) =>
      h("p", { class: "reason", "data-offering": o.name }, `${o.name}: ${o.reason}`))),
    h("fieldset", { id: "deploy-networks" }, h("legend", {}, "Networks"),
      networks.map((n) => h("label", { class: "inline", for: `net-${n.id}` },
        h("input", { type: "checkbox", id: `net-${n.id}`, name: "network", value: n.id,
          checked: options.networkids.includes(n.id) }), n.name))),
    h("label", { for: "deploy-host" }, "Host"),
    h("select", { id: "deploy-host", name: "host" },
      h("option", { value: "" }, "Any host that reaches the snapshot's pool"),
      options.host.map((x) => h("option", { value: x.id }, `${x.name} (${x.memoryfree} MB free)`))),
    h("label", { class: "inline", for: "deploy-start" },
      h("input", { type: "checkbox", id: "deploy-start", name: "start", checked: true }), "Start the VM"),
  ];
  dialog({
    title: `Deploy VM from VM snapshot ${s.name}`, fields, submit: "Deploy",
    onSubmit: async (form, box) => {
      const nets = [...form.querySelectorAll("input[name=network]:checked")].map((c) => c.value);
      const name = form.name.value;
      const accepted = await api("deployVirtualMachine", {
        vmsnapshotid: s.id, serviceofferingid: form.offering.value, name,
        networkids: nets.join(","), hostid: form.host.value,
        startvm: form.start.checked ? "true" : "false",
      });
      followDeploy(box, name, s, accepted, options.position, form.start.checked);
      return "keep";
    },
  });
}

function followDeploy(box, name, s, accepted, position, start) {
  const steps = h("ol", { class: "steps", id: "deploy-steps" });
  const status = h("p", { class: "deploy-status", id: "deploy-status", role: "status" }, "Deploying…");
  const detail = h("p", { id: "deploy-detail" });
  const close = h("button", { type: "button", id: "deploy-close", onclick: () => { box.close(); render(); } }, "Close");
  box.replaceChildren(h("div", { class: "body" },
    h("h2", { id: "dialog-title" }, `Deploying ${name}`),
    h("p", { class: "note" }, `Job ${accepted.jobid}`), steps, status, detail,
    h("div", { class: "buttons" },
      h("a", { class: "button", href: `#/instances/${accepted.id}`, id: "open-new-vm", onclick: () => box.close() }, "Open the new VM"),
      close)));
  let finished = false;
  let source = null;
  const step = (text, failed = false) => steps.append(h("li", { class: failed ? "failed" : "" }, text));
  const finish = (text, extra, failed) => {
    if (finished) return;
    finished = true;
    status.textContent = text;
    status.className = `deploy-status state-${text}`;
    detail.textContent = extra || "";
    if (source) source.close();
    if (failed) detail.classList.add("error");
  };
  follow(position, (envelope) => {
    const d = envelope.data || {};
    const ours = envelope.stream_id === `vm-${accepted.id}` || d.vm_id === accepted.id ||
      d.job_id === accepted.jobid || (envelope.type.startsWith("TemplateSeed") && d.vm_snapshot_id === s.id);
    if (!ours || finished) return;
    const label = STEPS[envelope.type];
    step(label ? label(d) : envelope.type, envelope.type === "VmDeployFailed");
    if (envelope.type === "VmDeployFailed") finish("Error", `Failed at step ${d.step}: ${d.reason}`, true);
  }).then((opened) => { source = opened; if (finished) opened.close(); }, () => {});
  (async () => {
    try {
      await job(accepted.jobid);
      const vm = await findVm(accepted.id);
      finish(vm.state, start ? "" : "The VM was deployed without starting it.", vm.state === "Error");
    } catch (exc) {
      finish("Error", exc.message, true);
    }
  })();
}

// ---- the other pages ------------------------------------------------------------------------

async function templatesPage() {
  const gen = generation;
  const templates = (await api("listTemplates", { templatefilter: isAdmin() ? "all" : "self" })).template || [];
  page(gen, "Templates", table("templates", [
    { label: "Name", cell: (t) => t.name }, { label: "Zone", cell: (t) => `${t.zonename || t.zoneid} (${t.hypervisor})` },
    { label: "Format", cell: (t) => t.format }, { label: "Ready", cell: (t) => state(t.isready ? "Ready" : t.status) },
    { label: "From VM snapshot", cell: (t) => t.vmsnapshotid || "-", cls: "hide-narrow" },
    { label: "Account", cell: (t) => t.account }, { label: "Created", cell: (t) => when(t.created), cls: "hide-narrow" },
  ], templates, "No templates yet: deploying from a VM snapshot, or Create template, seeds one."));
}

async function volumesPage() {
  const gen = generation;
  const volumes = (await api("listVolumes", {})).volume || [];
  page(gen, "Volumes", table("volumes", [
    { label: "Name", cell: (v) => v.name }, { label: "Type", cell: (v) => v.type },
    { label: "State", cell: (v) => state(v.state) }, { label: "Size", cell: (v) => gb(v.size) },
    { label: "VM", cell: (v) => (v.virtualmachineid ? h("a", { href: `#/instances/${v.virtualmachineid}` }, v.vmname || v.virtualmachineid) : "-") },
    { label: "Storage pool", cell: (v) => v.storage || "-", cls: "hide-narrow" },
    { label: "Zone", cell: (v) => v.zonename || "-", cls: "hide-narrow" },
  ], volumes, "No volumes."));
}

const JOB_STATUS = { 0: "Pending", 1: "Succeeded", 2: "Failed" };

async function jobsPage() {
  const gen = generation;
  const jobs = (await api("listAsyncJobs", {})).asyncjobs || [];
  jobs.sort((a, b) => (b.created || "").localeCompare(a.created || ""));
  page(gen, "Jobs", h("div", { class: "toolbar" }, h("button", { type: "button", onclick: render }, "Refresh")),
    table("jobs", [
      { label: "Created", cell: (j) => when(j.created) }, { label: "Command", cell: (j) => j.cmd },
      { label: "Status", cell: (j) => state(JOB_STATUS[j.jobstatus]) },
      { label: "Object", cell: (j) => `${j.jobinstancetype || ""} ${j.jobinstanceid || ""}`, cls: "hide-narrow" },
      { label: "Error", cell: (j) => j.errortext || (j.jobresult && j.jobresult.errortext) || "" },
    ], jobs, "No jobs."));
}

async function eventsPage() {
  const gen = generation;
  const info = await streamInfo();
  const rows = h("tbody", {});
  const live = h("p", { class: "note", id: "events-live" }, "Connecting to the audit stream…");
  page(gen, "Audit events", live,
    h("div", { class: "table-wrap" }, h("table", { id: "events" },
      h("thead", {}, h("tr", {}, ["Position", "Time", "Type", "Stream", "By", "Data"].map((t) =>
        h("th", { scope: "col" }, t)))), rows)));
  if (gen !== generation) return;
  const source = await follow(Math.max(0, info.position - 50), (e) => {
    rows.prepend(h("tr", { "data-type": e.type },
      h("td", {}, String(e.position)), h("td", {}, when(e.recorded_at)), h("td", {}, e.type),
      h("td", {}, e.stream_id), h("td", {}, (e.metadata && e.metadata.actor) || "-"),
      h("td", {}, h("pre", { class: "data" }, JSON.stringify(e.data)))));
    while (rows.children.length > 300) rows.lastChild.remove();
  });
  source.addEventListener("open", () => { live.textContent = "Live: new events appear at the top as they are committed."; });
  source.addEventListener("error", () => { live.textContent = "The audit stream is reconnecting…"; });
}

async function infrastructurePage() {
  const gen = generation;
  const [zones, hosts, pools, networks, settingsNote] = await Promise.all([
    api("listZones").then((r) => r.zone || []), api("listHosts").then((r) => r.host || []),
    api("listStoragePools").then((r) => r.storagepool || []),
    api("listNetworks").then((r) => r.network || []), Promise.resolve(""),
  ]);
  const hypervisor = new Map(zones.map((z) => [z.id, z.hypervisor]));
  const fullClone = (p) => {
    const box = h("input", { type: "checkbox", id: `full-clone-${p.id}`, checked: p.vmwarecreatefullclone });
    box.addEventListener("change", async () => {
      const name = hypervisor.get(p.zoneid) === "KVM" ? "kvm.create.full.clone" : "vmware.create.full.clone";
      try {
        await api("updateConfiguration", { name, value: box.checked ? "true" : "false", storageid: p.id });
        flash(`${p.name}: ${name} = ${box.checked}.`);
      } catch (exc) { box.checked = !box.checked; flash(exc.message, true); }
    });
    return h("label", { class: "inline", for: `full-clone-${p.id}` }, box, "full clones");
  };
  page(gen, "Infrastructure", settingsNote,
    h("div", { class: "toolbar" }, h("button", {
      type: "button", id: "sync-inventory", onclick: async (event) => {
        event.target.disabled = true;
        try { await job((await api("syncInventory")).jobid); await render(); flash("The hypervisors were read again."); }
        catch (exc) { flash(exc.message, true); event.target.disabled = false; }
      },
    }, "Sync inventory")),
    h("h2", {}, "Zones"),
    table("zones", [{ label: "Name", cell: (z) => z.name }, { label: "Hypervisor", cell: (z) => z.hypervisor },
      { label: "ID", cell: (z) => z.id, cls: "hide-narrow" }], zones, "No zones."),
    h("h2", {}, "Hosts"),
    table("hosts", [
      { label: "Name", cell: (x) => x.name }, { label: "Zone", cell: (x) => x.zonename || x.zoneid },
      { label: "State", cell: (x) => state(x.state) },
      { label: "CPU allocated", cell: (x) => `${x.cpuallocated} / ${x.cpunumber * x.cpuspeed} MHz` },
      { label: "Memory allocated", cell: (x) => `${gb(x.memoryallocated)} / ${gb(x.memorytotal)}` },
    ], hosts, "No hosts."),
    h("h2", {}, "Primary storage pools"),
    table("pools", [
      { label: "Name", cell: (p) => p.name }, { label: "Zone", cell: (p) => p.zonename || p.zoneid },
      { label: "Type", cell: (p) => p.type, cls: "hide-narrow" },
      { label: "Used", cell: (p) => `${gb(p.disksizeused)} / ${gb(p.disksizetotal)}` },
      { label: "Deploys make", cell: fullClone },
    ], pools, "No pools."),
    h("h2", {}, "Networks"),
    table("networks", [
      { label: "Name", cell: (n) => n.name }, { label: "Zone", cell: (n) => n.zonename || n.zoneid },
      { label: "CIDR", cell: (n) => n.cidr || "-" }, { label: "Gateway", cell: (n) => n.gateway || "-", cls: "hide-narrow" },
      { label: "Binding", cell: (n) => n.broadcasturi || "-", cls: "hide-narrow" },
    ], networks, "No networks."));
}

async function accountsPage() {
  const gen = generation;
  const accounts = (await api("listAccounts")).account || [];
  const keysButton = (u) => h("button", {
    type: "button", class: "keys", "data-user": u.username, onclick: () => dialog({
      title: `New API keys for ${u.username}`,
      fields: h("p", {}, "A new key pair replaces the user's others at once."),
      submit: "Make new keys",
      onSubmit: async (form, box) => {
        const made = (await api("registerUserKeys", { id: u.id })).userkeys;
        box.replaceChildren(h("div", { class: "body" }, h("h2", {}, `API keys of ${u.username}`),
          facts([["API key", made.apikey], ["Secret key", made.secretkey]]),
          h("p", { class: "note" }, "The secret key is shown once."),
          h("div", { class: "buttons" }, h("button", { type: "button", onclick: () => box.close() }, "Close"))));
        return "keep";
      },
    }),
  }, "New API keys");
  const create = isAdmin() ? h("button", {
    type: "button", id: "create-account", onclick: () => dialog({
      title: "Create an account",
      fields: [
        ["username", "Username", "text"], ["password", "Password", "password"], ["email", "Email", "email"],
        ["firstname", "First name", "text"], ["lastname", "Last name", "text"],
      ].map(([name, label, type]) => [h("label", { for: `account-${name}` }, label),
        h("input", { id: `account-${name}`, name, type, required: true })])
        .concat([h("label", { for: "account-type" }, "Type"),
          h("select", { id: "account-type", name: "accounttype" }, h("option", { value: "0" }, "User"), h("option", { value: "1" }, "Administrator"))]),
      submit: "Create account",
      onSubmit: async (form) => {
        await api("createAccount", {
          username: form.username.value, password: form.password.value, email: form.email.value,
          firstname: form.firstname.value, lastname: form.lastname.value, accounttype: form.accounttype.value,
        });
        await render();
        flash(`Account ${form.username.value} was created.`);
      },
    }),
  }, "Create account") : null;
  page(gen, "Accounts", h("div", { class: "toolbar" }, create),
    table("accounts", [
      { label: "Account", cell: (a) => a.name }, { label: "Role", cell: (a) => a.rolename },
      { label: "State", cell: (a) => a.state },
      { label: "Users and keys", cell: (a) => (a.user || []).map((u) => h("div", {}, `${u.username} `, keysButton(u))) },
    ], accounts, "No accounts."));
}

// ---- routing ------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/instances\/([0-9a-f-]+)\/snapshots$/, (m) => snapshotsPage(m[1]), "instances"],
  [/^#\/instances\/([0-9a-f-]+)$/, (m) => instancePage(m[1]), "instances"],
  [/^#\/templates$/, templatesPage, "templates"],
  [/^#\/volumes$/, volumesPage, "volumes"],
  [/^#\/jobs$/, jobsPage, "jobs"],
  [/^#\/events$/, eventsPage, "events"],
  [/^#\/infrastructure$/, infrastructurePage, "infrastructure"],
  [/^#\/accounts$/, accountsPage, "accounts"],
  [/^/, instancesPage, "instances"],
];

async function render() {
  const gen = ++generation;
  closeStreams();
  if (!resume()) { loginPage(""); return; }
  const top = document.getElementById("top");
  top.hidden = false;
  document.getElementById("who").textContent = `${session.user.username} (${session.user.account})`;
  for (const link of document.querySelectorAll("#nav a[data-admin]")) link.hidden = !isAdmin();
  const [pattern, show, name] = ROUTES.find(([p]) => p.test(location.hash));
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === name);
  try {
    await show(location.hash.match(pattern));
  } catch (exc) {
    if (session.key) page(gen, "Something went wrong", h("p", { class: "error", role: "alert", id: "page-error" }, exc.message));
  }
}

window.addEventListener("hashchange", render);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", logout);
  render();
});
