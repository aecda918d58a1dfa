// The review page: pages through the report's objects, keeps accept/reject decisions in
// localStorage and exports them as JSON for `samrefiner apply-review`.
//
// Data comes from <script> files (fetch() is blocked on file:// URLs): data/manifest.js sets
// window.REVIEW_MANIFEST; data/v<V>/p<P>.js calls window.reviewChunk(V, P, objects) with page P of
// view V (view 0: all objects, then one view per class), objects sorted by score ascending.
(function () {
  "use strict";

  const manifest = window.REVIEW_MANIFEST;
  const CACHE_LIMIT = 16; // pages of object data kept in memory
  const $ = (id) => document.getElementById(id);
  const grid = $("grid");

  if (!manifest) {
    $("status").textContent = "data/manifest.js is missing: re-run `samrefiner review`.";
    return;
  }

  const storageKey = "samrefiner-review:" + manifest.reportId;
  const chunks = new Map(); // "view/page" -> objects, oldest first
  const pending = new Map(); // "view/page" -> {promise, resolve, reject}
  const state = { view: 0, threshold: 1, page: 0, focus: 0, count: 0, items: [] };
  let decisions = readDecisions();
  let renderToken = 0;

  // ---- data ---------------------------------------------------------------------------------

  window.reviewChunk = function (view, page, objects) {
    const key = view + "/" + page;
    chunks.set(key, objects);
    while (chunks.size > CACHE_LIMIT) chunks.delete(chunks.keys().next().value);
    const waiter = pending.get(key);
    if (waiter) {
      pending.delete(key);
      waiter.resolve(objects);
    }
  };

  function loadChunk(view, page) {
    const key = view + "/" + page;
    if (chunks.has(key)) {
      const objects = chunks.get(key);
      chunks.delete(key); // re-insert: most recently used last
      chunks.set(key, objects);
      return Promise.resolve(objects);
    }
    if (pending.has(key)) return pending.get(key).promise;
    const waiter = {};
    waiter.promise = new Promise((resolve, reject) => {
      waiter.resolve = resolve;
      waiter.reject = reject;
    });
    pending.set(key, waiter);
    const script = document.createElement("script");
    script.src = "data/v" + view + "/p" + page + ".js";
    const fail = (why) => {
      script.remove();
      if (pending.get(key) === waiter) {
        pending.delete(key);
        waiter.reject(new Error(why + " " + script.src));
      }
    };
    script.onload = () => fail("no data in");
    script.onerror = () => fail("cannot load");
    document.head.appendChild(script);
    return waiter.promise;
  }

  // Index of the first element of the non-decreasing array `values` greater than `limit`.
  function upperBound(values, limit) {
    let low = 0;
    let high = values.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (values[middle] <= limit) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  // Objects of the current view with score <= threshold: a prefix of the view.
  async function countVisible() {
    const view = manifest.views[state.view];
    const pages = upperBound(view.firsts, state.threshold);
    if (pages === 0) return 0;
    const last = await loadChunk(state.view, pages - 1);
    return (pages - 1) * manifest.pageSize + last.filter((o) => o.score <= state.threshold).length;
  }

  // ---- decisions ----------------------------------------------------------------------------

  function readDecisions() {
    try {
      return JSON.parse(localStorage.getItem(storageKey)) || {};
    } catch (error) {
      return {};
    }
  }

  function saveDecisions() {
    try {
      localStorage.setItem(storageKey, JSON.stringify(decisions));
      setStatus("");
    } catch (error) {
      setStatus("Could not save decisions in this browser (" + error.message + "): export them now.");
    }
  }

  function decide(index, decision) {
    const object = state.items[index];
    if (!object) return;
    if (decision) decisions[object.id] = { image: object.image, object: object.object, decision: decision };
    else delete decisions[object.id];
    saveDecisions();
    refreshCard(index);
    refreshTally();
  }

  function exportDecisions() {
    const list = Object.keys(decisions).sort().map((id) => decisions[id]);
    const body = {
      format: "samrefiner-review-decisions",
      version: 1,
      report: manifest.reportId,
      title: manifest.title,
      decisions: list,
    };
    const blob = new Blob([JSON.stringify(body, null, 1) + "\n"], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "review-decisions.json";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  // ---- rendering ----------------------------------------------------------------------------

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function formatScore(value) {
    return value === null || value === undefined ? "\u2013" : value.toFixed(3);
  }

  function makeCard(object, index) {
    const card = element("article", "card");
    card.dataset.index = index;
    card.dataset.id = object.id;
    card.dataset.score = object.score;
    const thumb = element("div", "thumb");
    const image = element("img");
    image.loading = "lazy";
    image.decoding = "async";
    image.width = 366;
    image.height = 180;
    image.alt = object.name + " object " + object.object;
    image.src = object.thumb;
    thumb.append(image, element("span", "tag coarse", "coarse"), element("span", "tag refined", "refined"));
    const meta = element("div", "meta");
    const name = element("span", "name", object.name + " \u00b7 " + object.object);
    name.title = object.id;
    meta.append(name, element("span", "label", object.class));
    const scores = element("div", "scores");
    if (object.kept) {
      scores.append(element("b", "kept", "kept coarse"));
    } else if (manifest.hasPredicted) {
      const predicted = element("span", null, "predicted IoU ");
      predicted.append(element("b", "predicted", formatScore(object.predicted)));
      scores.append(predicted);
    }
    const change = element("span", null, "change IoU ");
    change.append(element("b", "change", formatScore(object.change)));
    scores.append(change);
    const actions = element("div", "actions");
    const accept = element("button", "accept", "Accept (a)");
    const reject = element("button", "reject", "Reject (r)");
    accept.type = reject.type = "button";
    actions.append(accept, reject);
    card.append(thumb, meta, scores, actions);
    return card;
  }

  function refreshCard(index) {
    const card = grid.children[index];
    const object = state.items[index];
    if (!card || !object) return;
    const decision = decisions[object.id] ? decisions[object.id].decision : "";
    card.classList.toggle("accepted", decision === "accept");
    card.classList.toggle("rejected", decision === "reject");
    card.dataset.decision = decision;
  }

  function refreshTally() {
    let accepted = 0;
    let rejected = 0;
    for (const id in decisions) {
      if (decisions[id].decision === "accept") accepted += 1;
      else rejected += 1;
    }
    $("tally").textContent = accepted + " accepted \u00b7 " + rejected + " rejected of " + manifest.total;
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function setFocus(index, scroll) {
    const previous = grid.children[state.focus];
    if (previous) previous.classList.remove("focused");
    state.focus = index;
    const card = grid.children[index];
    if (!card) return;
    card.classList.add("focused");
    if (scroll) card.scrollIntoView({ block: "nearest" });
  }

  function pageCount() {
    return Math.max(1, Math.ceil(state.count / manifest.pageSize));
  }

  async function show(page, focus) {
    const token = ++renderToken;
    page = Math.min(Math.max(page, 0), pageCount() - 1);
    state.page = page; // at once, so that quick key presses add up
    let items = [];
    try {
      if (state.count > 0) items = await loadChunk(state.view, page);
    } catch (error) {
      setStatus(error.message);
      return;
    }
    if (token !== renderToken) return; // a newer request won
    state.items = items.filter((o) => o.score <= state.threshold);
    const cards = state.items.map(makeCard);
    grid.replaceChildren(...cards);
    if (cards.length === 0) grid.append(element("p", "empty", "No objects match."));
    state.items.forEach((_, index) => refreshCard(index));
    setFocus(Math.min(Math.max(focus, 0), state.items.length - 1), false);
    window.scrollTo(0, 0);
    const first = page * manifest.pageSize;
    $("page-number").value = page + 1;
    $("page-number").max = pageCount();
    $("page-count").textContent = pageCount();
    $("range").textContent =
      "objects " + (state.count ? first + 1 : 0) + "\u2013" + (first + state.items.length) + " of " + state.count;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pageCount() - 1;
    grid.dataset.view = state.view;
    grid.dataset.page = page;
    grid.dataset.count = state.count;
    history.replaceState(null, "", "#view=" + state.view + "&threshold=" + state.threshold + "&page=" + page);
    if (page + 1 < pageCount()) loadChunk(state.view, page + 1).catch(() => {}); // prefetch
  }

  async function applyFilter(page) {
    const token = ++renderToken;
    const count = await countVisible();
    if (token !== renderToken) return;
    state.count = count;
    await show(page, 0);
  }

  function moveFocus(step) {
    const target = state.focus + step;
    if (target >= state.items.length) {
      if (state.page + 1 < pageCount()) show(state.page + 1, 0);
    } else if (target < 0) {
      if (state.page > 0) show(state.page - 1, manifest.pageSize - 1);
    } else {
      setFocus(target, true);
    }
  }

  // ---- events -------------------------------------------------------------------------------

  grid.addEventListener("click", (event) => {
    const card = event.target.closest(".card");
    if (!card) return;
    const index = Number(card.dataset.index);
    setFocus(index, false);
    const button = event.target.closest("button");
    if (!button) return;
    const decision = button.classList.contains("accept") ? "accept" : "reject";
    decide(index, card.dataset.decision === decision ? null : decision); // a second click undoes
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest("input, select, textarea")) return;
    switch (event.key) {
      case "a":
        decide(state.focus, "accept");
        moveFocus(1);
        break;
      case "r":
        decide(state.focus, "reject");
        moveFocus(1);
        break;
      case "u":
        decide(state.focus, null);
        break;
      case "ArrowRight":
      case "j":
        moveFocus(1);
        break;
      case "ArrowLeft":
      case "k":
        moveFocus(-1);
        break;
      case "n":
      case "PageDown":
        show(state.page + 1, 0);
        break;
      case "p":
      case "PageUp":
        show(state.page - 1, 0);
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  $("prev").addEventListener("click", () => show(state.page - 1, 0));
  $("next").addEventListener("click", () => show(state.page + 1, 0));
  $("page-number").addEventListener("change", (event) => show(Number(event.target.value) - 1 || 0, 0));
  $("export").addEventListener("click", exportDecisions);
  $("view").addEventListener("change", (event) => {
    state.view = Number(event.target.value);
    applyFilter(0);
  });
  $("threshold").addEventListener("change", (event) => {
    const value = Number(event.target.value);
    state.threshold = Number.isFinite(value) ? Math.min(Math.max(value, 0), 1) : 1;
    event.target.value = state.threshold;
    applyFilter(0);
  });

  // ---- start --------------------------------------------------------------------------------

  function start() {
    document.title = manifest.title + " \u2013 samrefiner review";
    $("title").textContent = manifest.title;
    $("order-note").textContent = manifest.hasPredicted
      ? "worth a look first: objects kept coarse, then lowest of predicted IoU and change IoU (coarse vs refined)"
      : "no predicted IoU in this run: largest change (lowest IoU coarse vs refined) first";
    const select = $("view");
    manifest.views.forEach((view, index) => {
      const option = element("option", null, view.name + " (" + view.count + ")");
      option.value = index;
      select.append(option);
    });
    select.disabled = manifest.views.length < 2;
    const saved = new URLSearchParams(location.hash.slice(1));
    const view = Number(saved.get("view"));
    if (Number.isInteger(view) && view >= 0 && view < manifest.views.length) state.view = view;
    const threshold = Number(saved.get("threshold") || 1);
    if (threshold >= 0 && threshold <= 1) state.threshold = threshold;
    select.value = state.view;
    $("threshold").value = state.threshold;
    refreshTally();
    applyFilter(Number(saved.get("page")) || 0);
  }

  start();
})();
