// The pacsctl viewer page: a study list, a study's series as thumbnails, an image view with
// window/level and scrolling through images and frames. Plain DICOMweb (QIDO-RS, WADO-RS
// metadata, /thumbnail, /rendered) with the link's token; no build step, no libraries.
"use strict";

const API = new URL("dicom-web", document.baseURI).href.replace(/\/$/, "");
const params = new URLSearchParams(location.search);
const token = params.get("token") || sessionStorage.getItem("pacsctl-token") || "";
if (params.get("token")) {
  sessionStorage.setItem("pacsctl-token", token);
  params.delete("token");  // out of the address bar (and of history), kept for this tab
  history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : "") + location.hash);
}
const $ = (id) => document.getElementById(id);
const tag = (item, t) => (item[t] && item[t].Value ? item[t].Value : []);
const first = (item, t) => {
  const v = tag(item, t)[0];
  return v && typeof v === "object" ? v.Alphabetic || "" : v === undefined ? "" : String(v);
};

function status(text) { $("status").textContent = text; }

async function api(path, accept = "application/dicom+json") {
  const response = await fetch(API + path, { headers: { Authorization: "Bearer " + token, Accept: accept } });
  if (response.status === 401) throw new Error("the link's token is missing, revoked or expired");
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return response;
}
const json = async (path) => (await api(path)).json();

function show(view) {
  document.body.dataset.view = view;
  for (const name of ["list", "series", "image"]) $(name + "-view").hidden = name !== view;
}

// -- the study list -----------------------------------------------------------------------
async function searchStudies(event) {
  if (event) event.preventDefault();
  const form = new FormData($("search"));
  const query = new URLSearchParams({ includefield: "all", limit: "500" });
  const name = form.get("PatientName").trim();
  if (name) query.set("PatientName", name.includes("*") ? name : name + "*");
  if (form.get("PatientID").trim()) query.set("PatientID", form.get("PatientID").trim());
  const from = form.get("from").replaceAll("-", ""), to = form.get("to").replaceAll("-", "");
  if (from || to) query.set("StudyDate", `${from}-${to}`);
  if (form.get("ModalitiesInStudy").trim()) query.set("ModalitiesInStudy", form.get("ModalitiesInStudy").trim().toUpperCase());
  status("searching…");
  const studies = await json("/studies?" + query);
  const body = $("studies").tBodies[0];
  body.replaceChildren();
  for (const study of studies) {
    const row = body.insertRow();
    row.className = "study-row";
    row.dataset.uid = first(study, "0020000D");
    const date = first(study, "00080020");
    for (const text of [first(study, "00100010").replaceAll("^", " "), first(study, "00100020"),
                        date.replace(/(\d{4})(\d\d)(\d\d)/, "$1-$2-$3"), first(study, "00081030"),
                        tag(study, "00080061").join(", "), first(study, "00201206"), first(study, "00201208")]) {
      row.insertCell().textContent = text;
    }
    row.addEventListener("click", () => openStudy(row.dataset.uid, row.cells[0].textContent));
  }
  status(`${studies.length} stud${studies.length === 1 ? "y" : "ies"}`);
  show("list");
}

// -- a study's series ---------------------------------------------------------------------
async function openStudy(studyUID, title) {
  show("series");
  $("study-title").textContent = title || studyUID;
  $("crumb").textContent = "› " + (title || studyUID);
  location.hash = "study=" + studyUID;
  const series = await json(`/studies/${studyUID}/series?includefield=all`);
  const box = $("series");
  box.replaceChildren();
  for (const item of series) {
    const uid = first(item, "0020000E");
    const card = document.createElement("figure");
    card.className = "series";
    const img = document.createElement("img");
    img.alt = "series " + first(item, "00200011");
    const caption = document.createElement("figcaption");
    caption.textContent = `${first(item, "00080060")} #${first(item, "00200011")} ${first(item, "0008103E")} (${first(item, "00201209")})`;
    card.append(img, caption);
    card.addEventListener("click", () => openSeries(studyUID, uid));
    box.append(card);
    api(`/studies/${studyUID}/series/${uid}/thumbnail`, "image/jpeg")
      .then((r) => r.blob()).then((b) => { img.src = URL.createObjectURL(b); img.dataset.loaded = "1"; })
      .catch((e) => { caption.textContent += " — " + e.message; });
  }
  status(`${series.length} series`);
}

// -- the image view -----------------------------------------------------------------------
const view = { study: "", series: "", images: [], index: 0, center: null, width: null, defaults: [null, null], pending: 0 };

async function openSeries(studyUID, seriesUID) {
  show("image");
  location.hash = `study=${studyUID}&series=${seriesUID}`;
  const metadata = await json(`/studies/${studyUID}/series/${seriesUID}/metadata`);
  metadata.sort((a, b) => Number(first(a, "00200013") || 0) - Number(first(b, "00200013") || 0));
  view.study = studyUID; view.series = seriesUID; view.images = [];
  for (const item of metadata) {
    const frames = Number(first(item, "00280008") || 1);
    for (let f = 1; f <= frames; f++) view.images.push({ uid: first(item, "00080018"), frame: f, frames });
  }
  const one = metadata[0] || {};
  const c = parseFloat(first(one, "00281050")), w = parseFloat(first(one, "00281051"));
  view.defaults = [isNaN(c) ? null : c, isNaN(w) ? null : w];
  [view.center, view.width] = view.defaults;
  $("slice").max = String(view.images.length);
  $("crumb").textContent = `› series ${first(one, "00200011")}`;
  await go(0);
}

async function go(index) {
  if (!view.images.length) return;
  view.index = Math.max(0, Math.min(view.images.length - 1, index));
  $("slice").value = String(view.index + 1);
  const image = view.images[view.index];
  $("position").textContent = `${view.index + 1}/${view.images.length}` + (image.frames > 1 ? ` (frame ${image.frame}/${image.frames})` : "");
  $("center").value = view.center ?? ""; $("width").value = view.width ?? "";
  const query = view.center !== null && view.width !== null ? `?window=${view.center},${view.width}` : "";
  const ticket = ++view.pending;
  const path = `/studies/${view.study}/series/${view.series}/instances/${image.uid}/frames/${image.frame}/rendered${query}`;
  const blob = await (await api(path, "image/png")).blob();
  if (ticket !== view.pending) return;  // a newer image was asked for meanwhile
  const bitmap = await createImageBitmap(blob);
  const canvas = $("image");
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 0; i < pixels.length; i += 4) if (pixels[i] || pixels[i + 1] || pixels[i + 2]) lit++;
  canvas.dataset.litPixels = String(lit);  // what was drawn, for a look from outside (tests)
  status(`W/L ${view.center ?? "file"}/${view.width ?? "file"}`);
}

function setWindow(center, width) {
  view.center = Math.round(center); view.width = Math.max(1, Math.round(width));
  clearTimeout(view.timer);
  view.timer = setTimeout(() => go(view.index), 60);
}

function wireImageControls() {
  const canvas = $("image");
  canvas.addEventListener("wheel", (e) => { e.preventDefault(); go(view.index + Math.sign(e.deltaY)); }, { passive: false });
  document.addEventListener("keydown", (e) => {
    if (document.body.dataset.view !== "image" || e.target.tagName === "INPUT") return;
    if (e.key === "ArrowDown" || e.key === "ArrowRight" || e.key === "PageDown") go(view.index + 1);
    if (e.key === "ArrowUp" || e.key === "ArrowLeft" || e.key === "PageUp") go(view.index - 1);
  });
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, c: view.center ?? 40, w: view.width ?? 400 };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (drag) setWindow(drag.c + (e.clientY - drag.y) * 2, drag.w + (e.clientX - drag.x) * 4);
  });
  canvas.addEventListener("pointerup", () => { drag = null; });
  $("slice").addEventListener("input", (e) => go(Number(e.target.value) - 1));
  $("center").addEventListener("change", () => setWindow(Number($("center").value), view.width ?? 400));
  $("width").addEventListener("change", () => setWindow(view.center ?? 40, Number($("width").value)));
  $("reset").addEventListener("click", () => { [view.center, view.width] = view.defaults; go(view.index); });
}

async function start() {
  wireImageControls();
  $("search").addEventListener("submit", (e) => searchStudies(e).catch((err) => status(err.message)));
  $("to-list").addEventListener("click", (e) => { e.preventDefault(); location.hash = ""; $("crumb").textContent = ""; searchStudies(); });
  const hash = new URLSearchParams(location.hash.slice(1));
  try {
    if (hash.get("study") && hash.get("series")) await openSeries(hash.get("study"), hash.get("series"));
    else if (hash.get("study")) await openStudy(hash.get("study"));
    else await searchStudies();
  } catch (err) {
    status(err.message);
  }
  document.body.dataset.ready = "1";
}
start();
