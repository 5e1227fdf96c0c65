// collabkit's page: plain JavaScript, no build step, no library, no CDN. It asks only the public HTTP API
// (GET model, GET items/search, POST recommendations, GET items/{item}/similar, GET map), with URLs relative to
// the page, so it works behind a path prefix and shows a reloaded model on the next request.
"use strict";

const STRINGS = {
  "en": {
    skip: "Skip to search",
    title: "collabkit: films for your taste",
    language: "Language",
    searchRate: "Search and rate",
    searchLabel: "Find a film by title",
    yourFilms: "Your films",
    noRatings: "No films yet: search for one above and rate it.",
    clearAll: "Clear all",
    recommendations: "Recommended for you",
    similar: "Similar films",
    map: "The taste map",
    mapIntro: "Each dot is a film, placed by the first two principal components of the model's item factors: " +
      "films close together appeal to the same people. Hover over or focus a dot to see its title; click it for similar films.",
    keyTop: "most-rated films",
    keyRated: "your films",
    keyRec: "recommended",
    card: "The model card",
    footer: "Served by collabkit. The API behind this page:",
    helpRatings: "Rate films on the model's scale ({0} to {1}). Recommendations follow at once: the model folds " +
      "your ratings in, with no retraining.",
    helpImplicit: "This model learned from implicit feedback (no ratings): mark films liked (they shape your " +
      "recommendations) or seen (they are only left out of them).",
    loading: "Loading the model…",
    identity: "{0} · trained on {1} · loaded {2}",
    searching: "Searching…",
    found: "{0} films found; use the arrow keys and Enter to choose one.",
    close: "No title contains “{0}”; the closest titles:",
    none: "No film matches “{0}”.",
    ratingsCount: "{0} ratings",
    added: "Added {0}: now rate it.",
    already: "{0} is already in your films.",
    chooseRating: "Your rating…",
    chooseImplicit: "Choose…",
    liked: "liked",
    seen: "seen",
    ratingFor: "Your rating for {0}",
    remove: "Remove",
    removeFilm: "Remove {0}",
    rate: "Rate",
    rateFilm: "Rate {0}",
    showSimilar: "Show films similar to {0}",
    recsNeedRating: "Rate a film to get recommendations.",
    recsNeedLiked: "Mark a film liked to get recommendations.",
    recsLoading: "Folding your films in…",
    recsFrom: "{0} films from your {1} ratings (fold-in, no retraining).",
    recsFromLiked: "{0} films from the {1} you liked (fold-in, no retraining).",
    recsNone: "The model has nothing more to recommend.",
    score: "score {0}",
    similarPrompt: "Choose any film (a title button, or a dot on the map) to see films like it.",
    similarLoading: "Looking for films like {0}…",
    similarTo: "Films like {0}:",
    mapUnavailable: "The taste map is unavailable for this model: {0}.",
    mapNoFactors: "it learned from implicit feedback with a ranking model that has no item factors to place films by",
    mapLoading: "Drawing the map…",
    mapPoints: "{0} films on the map.",
    axisX: "Horizontal axis (PC1, {0} of the variance)",
    axisY: "Vertical axis (PC2, {0} of the variance)",
    axisLow: "One end ({0}): {1}",
    axisHigh: "Other end ({0}): {1}",
    axisLeft: "left",
    axisRight: "right",
    axisBottom: "bottom",
    axisTop: "top",
    axisMeaning: "What the films at each end share is what this axis seems to measure.",
    hoverTop: "{0}",
    hoverYours: "{0} (your film)",
    hoverRec: "{0} (recommended)",
    cModel: "Rating model",
    cRanker: "Ranking model",
    cNone: "none",
    cImplicit: "none (implicit feedback: the model only ranks)",
    cDataset: "Dataset",
    cPublished: "Published size",
    cSize: "Trained on",
    cSizeValue: "{0} ratings, {1} users, {2} films",
    cLicense: "Dataset license",
    cLicenseUnknown: "not recorded: the model was not trained on a named dataset (see the data's own terms)",
    cTrainedAt: "Trained at",
    cSettings: "Training settings",
    cRmse: "Validation RMSE / MAE",
    cRanking: "Validation top-10 (precision / NDCG)",
    cNotRecorded: "not recorded",
    cLoaded: "Loaded at",
    cReloads: "{0} (reloads since the server started: {1})",
    cRecord: "Training record (per epoch)",
    cEpoch: "epoch",
    errServer: "The server answered {0}: {1}",
    errNetwork: "The server cannot be reached: {0}",
    errBadAnswer: "The server's answer could not be read",
    errTitle: "Something went wrong",
    dismiss: "Dismiss",
  },
  "zh-TW": {
    skip: "跳到搜尋",
    title: "collabkit：合你口味的電影",
    language: "語言",
    searchRate: "搜尋與評分",
    searchLabel: "依片名搜尋電影",
    yourFilms: "你的電影",
    noRatings: "還沒有電影：在上方搜尋一部並為它評分。",
    clearAll: "全部清除",
    recommendations: "為你推薦",
    similar: "相似電影",
    map: "口味地圖",
    mapIntro: "每個點是一部電影，位置來自模型電影因子的前兩個主成分：靠得近的電影吸引同一群人。" +
      "將滑鼠移到點上或以鍵盤聚焦可看片名；點選可看相似電影。",
    keyTop: "最多人評分的電影",
    keyRated: "你的電影",
    keyRec: "推薦",
    card: "模型說明卡",
    footer: "由 collabkit 提供。此頁使用的 API：",
    helpRatings: "依模型的評分範圍（{0} 到 {1}）為電影評分。推薦會立即更新：模型直接納入你的評分（fold-in），不需重新訓練。",
    helpImplicit: "此模型由隱式回饋（沒有評分）訓練：將電影標為「喜歡」（用來產生推薦）或「看過」（只會從推薦中排除）。",
    loading: "正在載入模型…",
    identity: "{0} · 訓練資料 {1} · 載入於 {2}",
    searching: "搜尋中…",
    found: "找到 {0} 部電影；用方向鍵與 Enter 選擇。",
    close: "沒有片名包含「{0}」；最接近的片名：",
    none: "沒有符合「{0}」的電影。",
    ratingsCount: "{0} 則評分",
    added: "已加入 {0}：請為它評分。",
    already: "{0} 已在你的電影中。",
    chooseRating: "你的評分…",
    chooseImplicit: "請選擇…",
    liked: "喜歡",
    seen: "看過",
    ratingFor: "你對 {0} 的評分",
    remove: "移除",
    removeFilm: "移除 {0}",
    rate: "評分",
    rateFilm: "為 {0} 評分",
    showSimilar: "顯示與 {0} 相似的電影",
    recsNeedRating: "為一部電影評分即可取得推薦。",
    recsNeedLiked: "將一部電影標為「喜歡」即可取得推薦。",
    recsLoading: "正在納入你的電影…",
    recsFrom: "根據你的 {1} 則評分，推薦 {0} 部電影（fold-in，不需重新訓練）。",
    recsFromLiked: "根據你喜歡的 {1} 部電影，推薦 {0} 部電影（fold-in，不需重新訓練）。",
    recsNone: "模型沒有更多可推薦的電影。",
    score: "分數 {0}",
    similarPrompt: "選擇任何一部電影（片名按鈕或地圖上的點）即可看到相似的電影。",
    similarLoading: "正在尋找與 {0} 相似的電影…",
    similarTo: "與 {0} 相似的電影：",
    mapUnavailable: "此模型無法顯示口味地圖：{0}。",
    mapNoFactors: "它由隱式回饋訓練，其排序模型沒有可用來擺放電影的電影因子",
    mapLoading: "正在繪製地圖…",
    mapPoints: "地圖上有 {0} 部電影。",
    axisX: "橫軸（第一主成分，佔變異的 {0}）",
    axisY: "縱軸（第二主成分，佔變異的 {0}）",
    axisLow: "一端（{0}）：{1}",
    axisHigh: "另一端（{0}）：{1}",
    axisLeft: "左",
    axisRight: "右",
    axisBottom: "下",
    axisTop: "上",
    axisMeaning: "兩端電影的共同點，大概就是這條軸所衡量的東西。",
    hoverTop: "{0}",
    hoverYours: "{0}（你的電影）",
    hoverRec: "{0}（推薦）",
    cModel: "評分模型",
    cRanker: "排序模型",
    cNone: "無",
    cImplicit: "無（隱式回饋：模型只做排序）",
    cDataset: "資料集",
    cPublished: "公布的規模",
    cSize: "訓練資料量",
    cSizeValue: "{0} 則評分、{1} 位使用者、{2} 部電影",
    cLicense: "資料集授權",
    cLicenseUnknown: "未記錄：模型不是以具名資料集訓練（請參閱資料本身的條款）",
    cTrainedAt: "訓練時間",
    cSettings: "訓練設定",
    cRmse: "驗證 RMSE / MAE",
    cRanking: "驗證前 10 名（precision / NDCG）",
    cNotRecorded: "未記錄",
    cLoaded: "載入時間",
    cReloads: "{0}（伺服器啟動後重新載入 {1} 次）",
    cRecord: "訓練紀錄（每個 epoch）",
    cEpoch: "epoch",
    errServer: "伺服器回應 {0}：{1}",
    errNetwork: "無法連線到伺服器：{0}",
    errBadAnswer: "無法讀取伺服器的回應",
    errTitle: "發生錯誤",
    dismiss: "關閉",
  },
};
const LANG_KEY = "collabkit.lang";
const SUGGESTIONS = 8;
const RECOMMENDATIONS = 10;
const MAP_POINTS = 300;
const SEARCH_DELAY_MS = 150;

const state = {
  lang: "en",
  model: null,        // GET model
  films: new Map(),   // key -> {item, title, value}; value: "" (not yet rated), a rating, "liked" or "seen"
  recs: [],           // [{rank, item, title, score}]
  similar: null,      // {film, list} or {film, loading}
  map: null,          // GET map
  errors: new Map(),  // channel -> message
  suggestions: [],
  active: -1,
  status: {"search-status": [], "recs-status": [], "map-hover": []},
};
const seq = {search: 0, recs: 0, similar: 0, map: 0};

const $ = (id) => document.getElementById(id);
const keyOf = (item) => typeof item + ":" + String(item);

function t(key, ...args) {
  const table = STRINGS[state.lang] || STRINGS.en;
  const text = key in table ? table[key] : STRINGS.en[key];
  return text.replace(/\{(\d)\}/g, (_, k) => String(args[Number(k)]));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

// --- the API ------------------------------------------------------------------------------------
class ApiError extends Error {}

function describe(body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => [(e.loc || []).join("."), e.msg].filter(Boolean).join(": ")).join("; ");
  }
  return "";
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {cache: "no-store", ...options,
      headers: {"Accept": "application/json", ...(options.body ? {"Content-Type": "application/json"} : {})}});
  } catch (err) {
    throw new ApiError(t("errNetwork", err.message || err));
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(t("errServer", `${response.status} ${response.statusText}`.trim(),
                         describe(body) || t("errBadAnswer")));
  }
  if (body === null) throw new ApiError(t("errBadAnswer"));
  return body;
}

function report(channel, err) {
  if (err) {
    state.errors.set(channel, err instanceof ApiError ? err.message : `${t("errTitle")}: ${err.message || err}`);
    if (!(err instanceof ApiError)) console.warn(err);  // a bug in this page, not an answer of the server
  } else {
    state.errors.delete(channel);
  }
  renderErrors();
}

function renderErrors() {
  const box = $("errors");
  box.replaceChildren(...[...state.errors].map(([channel, message]) => el("p", {},
    message, el("button", {type: "button", class: "secondary", text: t("dismiss"),
                           onclick: () => { state.errors.delete(channel); renderErrors(); }}))));
}

// --- the model ----------------------------------------------------------------------------------
async function loadModel() {
  try {
    if (state.model) {  // the card changes only with a reload, which /health's small answer shows
      const health = await api("health");
      if (health.loaded_at === state.model.loaded_at) {
        report("model", null);
        return false;
      }
    }
    const model = await api("model");
    const changed = !state.model || state.model.loaded_at !== model.loaded_at;
    state.model = model;
    report("model", null);
    if (changed) renderModel();
    return changed;
  } catch (err) {
    report("model", err);
    return false;
  }
}

function modelName(model) {
  return model.model_class ? (model.ranker ? `${model.model_class} + ${model.ranker}` : model.model_class)
                           : (model.ranker || "?");
}

function renderModel() {
  const model = state.model;
  if (!model) {
    $("identity").textContent = t("loading");
    return;
  }
  const info = model.info || {};
  $("identity").textContent = t("identity", modelName(model), info.data || "?", model.loaded_at);
  const help = $("rate-help");
  help.textContent = model.predicts_ratings && model.rating_scale
    ? t("helpRatings", fmt(model.rating_scale[0]), fmt(model.rating_scale[1])) : t("helpImplicit");
  renderCard();
  renderFilms();
}

function fmt(x, digits = 2) {
  return typeof x === "number" ? String(Number(x.toFixed(digits))) : String(x);
}

function settings(config) {
  if (!config || typeof config !== "object") return "";
  return Object.entries(config).filter(([, v]) => v !== null && typeof v !== "object")
    .map(([k, v]) => `${k}=${typeof v === "number" ? fmt(v, 6) : v}`).join(", ");
}

function renderCard() {
  const model = state.model;
  const info = model.info || {};
  const card = $("card");
  const rows = [];
  const add = (label, value) => rows.push(el("dt", {text: label}), el("dd", {text: value}));
  add(t("cModel"), model.model_class ? `${model.model_class} (${settings(model.model_hyperparameters)})` : t("cImplicit"));
  add(t("cRanker"), model.ranker ? `${model.ranker} (${settings(model.ranker_hyperparameters)})` : t("cNone"));
  add(t("cDataset"), model.dataset ? model.dataset.name : (info.data || t("cNotRecorded")));
  if (model.dataset) add(t("cPublished"), model.dataset.ratings);
  add(t("cSize"), t("cSizeValue", model.training_ratings == null ? "?" : model.training_ratings.toLocaleString(),
                    model.trained_users.toLocaleString(), model.trained_items.toLocaleString()));
  add(t("cLicense"), model.dataset ? model.dataset.license : t("cLicenseUnknown"));
  add(t("cTrainedAt"), info.trained_at || t("cNotRecorded"));
  const config = settings(info.config);
  if (config) add(t("cSettings"), config);
  add(t("cRmse"), typeof info.valid_rmse === "number"
    ? `${info.valid_rmse.toFixed(4)} / ${typeof info.valid_mae === "number" ? info.valid_mae.toFixed(4) : "?"}`
    : t("cNotRecorded"));
  const ranking = info.valid_ranking;
  add(t("cRanking"), ranking && typeof ranking === "object"
    ? `${fmt(ranking["precision@10"], 4)} / ${fmt(ranking["ndcg@10"], 4)}` : t("cNotRecorded"));
  add(t("cLoaded"), t("cReloads", model.loaded_at, model.reloads));
  card.replaceChildren(...rows);

  const record = $("record");
  const recorder = info.recorder;
  if (!recorder || !Array.isArray(recorder.values) || !recorder.values.length) {
    record.replaceChildren();
    return;
  }
  const names = recorder.metric_names || [];
  const values = recorder.values.slice(-12);
  const first = recorder.values.length - values.length;
  const table = el("table", {},
    el("caption", {text: t("cRecord")}),
    el("thead", {}, el("tr", {}, el("th", {scope: "col", text: t("cEpoch")}),
                       ...names.map((n) => el("th", {scope: "col", text: n})))),
    el("tbody", {}, ...values.map((row, k) => el("tr", {}, el("th", {scope: "row", text: String(first + k)}),
                                                ...row.map((v) => el("td", {text: v == null ? "" : fmt(v, 4)}))))));
  record.replaceChildren(table);
}

// --- search -------------------------------------------------------------------------------------
let searchTimer = null;

function onSearchInput() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(search, SEARCH_DELAY_MS);
}

async function search() {
  const q = $("search").value.trim();
  const mine = ++seq.search;
  if (!q) {
    closeSuggestions();
    say("search-status");
    return;
  }
  say("search-status", "searching");
  try {
    const found = await api(`items/search?q=${encodeURIComponent(q)}&n=${SUGGESTIONS}`);
    if (mine !== seq.search) return;
    report("search", null);
    state.suggestions = found.items;
    state.active = found.items.length ? 0 : -1;
    $("suggestions").dataset.query = q;  // (which query the list answers)
    if (found.match === "contains") say("search-status", "found", found.items.length);
    else say("search-status", found.match === "close" ? "close" : "none", q);
    renderSuggestions();
  } catch (err) {
    if (mine !== seq.search) return;
    say("search-status");
    closeSuggestions();
    report("search", err);
  }
}

function filmLabel(film) {
  return film.title || String(film.item);
}

function renderSuggestions() {
  const list = $("suggestions");
  const input = $("search");
  list.replaceChildren(...state.suggestions.map((film, k) => el("li", {
    id: `suggestion-${k}`, role: "option", "aria-selected": String(k === state.active),
    onmousedown: (event) => { event.preventDefault(); pick(k); },
  }, filmLabel(film), film.ratings != null ? el("span", {class: "count", text: ` · ${t("ratingsCount", film.ratings)}`}) : null)));
  const open = state.suggestions.length > 0;
  list.hidden = !open;
  input.setAttribute("aria-expanded", String(open));
  if (open && state.active >= 0) {
    input.setAttribute("aria-activedescendant", `suggestion-${state.active}`);
    $(`suggestion-${state.active}`).scrollIntoView({block: "nearest"});
  } else {
    input.removeAttribute("aria-activedescendant");
  }
}

function closeSuggestions() {
  state.suggestions = [];
  state.active = -1;
  renderSuggestions();
}

function onSearchKey(event) {
  const n = state.suggestions.length;
  if (event.key === "ArrowDown" && n) {
    state.active = (state.active + 1) % n;
    renderSuggestions();
    event.preventDefault();
  } else if (event.key === "ArrowUp" && n) {
    state.active = (state.active - 1 + n) % n;
    renderSuggestions();
    event.preventDefault();
  } else if (event.key === "Enter") {
    event.preventDefault();
    if (n) pick(Math.max(state.active, 0));
  } else if (event.key === "Escape") {
    closeSuggestions();
  }
}

function pick(k) {
  const film = state.suggestions[k];
  if (!film) return;
  $("search").value = "";
  closeSuggestions();
  addFilm(film);
}

// --- your films ---------------------------------------------------------------------------------
function scaleValues() {
  const scale = state.model && state.model.rating_scale;
  if (!state.model || !state.model.predicts_ratings || !scale) return null;
  const [low, high] = scale;
  const step = Number.isInteger(low) && Number.isInteger(high) ? 1 : 0.5;
  const values = [];
  for (let v = high; v >= low - 1e-9; v -= step) values.push(Number(v.toFixed(2)));  // (a low end off the steps is left out)
  return values;
}

function addFilm(film) {
  const key = keyOf(film.item);
  if (state.films.has(key)) {
    say("search-status", "already", filmLabel(film));
  } else {
    state.films.set(key, {item: film.item, title: film.title, value: ""});
    say("search-status", "added", filmLabel(film));
  }
  renderFilms();
  const select = document.querySelector(`#rated select[data-key="${CSS.escape(key)}"]`);
  if (select) select.focus();
}

function filmButton(film) {
  const selected = state.similar && keyOf(state.similar.film.item) === keyOf(film.item);
  return el("button", {type: "button", class: selected ? "film selected" : "film", "aria-label": t("showSimilar", filmLabel(film)),
                       text: filmLabel(film), onclick: () => showSimilar(film)});
}

function renderFilms() {
  const values = scaleValues();
  const items = [...state.films].map(([key, film]) => {
    const options = values
      ? [el("option", {value: "", text: t("chooseRating")}),
         ...values.map((v) => el("option", {value: String(v), text: `${v} ★`}))]
      : [el("option", {value: "", text: t("chooseImplicit")}),
         el("option", {value: "liked", text: t("liked")}), el("option", {value: "seen", text: t("seen")})];
    const select = el("select", {class: "rate-select", "data-key": key, "aria-label": t("ratingFor", filmLabel(film)),
                                 onchange: (event) => { film.value = event.target.value; refresh(); }}, ...options);
    select.value = String(film.value);
    if (select.value !== String(film.value)) film.value = "";  // a rating off a reloaded model's scale
    return el("li", {}, filmButton(film), select,
              el("button", {type: "button", class: "secondary", text: t("remove"), "aria-label": t("removeFilm", filmLabel(film)),
                            onclick: () => { state.films.delete(key); renderFilms(); refresh(); }}));
  });
  $("rated").replaceChildren(...items);
  $("no-ratings").hidden = items.length > 0;
  $("clear").hidden = items.length === 0;
}

// --- recommendations ----------------------------------------------------------------------------
async function refresh() {
  const mine = ++seq.recs;  // (counted here, so that an earlier answer cannot end the busy state of this one)
  $("recs").setAttribute("aria-busy", "true");
  const reloaded = await loadModel();  // a reloaded model shows on the next request
  if (mine !== seq.recs) return;
  await refreshRecommendations(mine);
  if (reloaded) renderAll();
  refreshMap();
}

async function refreshRecommendations(mine = ++seq.recs) {
  const films = [...state.films.values()];
  const implicit = !scaleValues();
  const used = films.filter((f) => (implicit ? f.value === "liked" : f.value !== "" && !Number.isNaN(Number(f.value))));
  const leftOut = new Set(films.map((f) => keyOf(f.item)));
  if (!used.length) {
    state.recs = [];
    say("recs-status", implicit ? "recsNeedLiked" : "recsNeedRating");
    report("recs", null);
    renderRecs();
    $("recs").setAttribute("aria-busy", "false");
    return;
  }
  say("recs-status", "recsLoading");
  const body = {
    ratings: used.map((f) => (implicit ? {item: f.item} : {item: f.item, rating: Number(f.value)})),
    n: Math.min(100, RECOMMENDATIONS + films.length - used.length),
    exclude_seen: true,
  };
  try {
    const answer = await api("recommendations", {method: "POST", body: JSON.stringify(body)});
    if (mine !== seq.recs) return;
    report("recs", null);
    state.recs = answer.recommendations.filter((r) => !leftOut.has(keyOf(r.item))).slice(0, RECOMMENDATIONS);
    if (state.recs.length) say("recs-status", implicit ? "recsFromLiked" : "recsFrom", state.recs.length, used.length);
    else say("recs-status", "recsNone");
  } catch (err) {
    if (mine !== seq.recs) return;
    state.recs = [];
    say("recs-status");
    report("recs", err);
  }
  renderRecs();
  $("recs").setAttribute("aria-busy", "false");
}

// one film of a list: the film (click: its similar films), a score, and a button to rate it
function filmRow(film, score) {
  return el("li", {}, filmButton(film), el("span", {class: "score", text: score}),
    el("button", {type: "button", class: "secondary", text: t("rate"), "aria-label": t("rateFilm", filmLabel(film)),
                  onclick: () => addFilm(film)}));
}

function renderRecs() {
  $("recs").replaceChildren(...state.recs.map((r) => filmRow(r, t("score", fmt(r.score, 3)))));
}

// --- similar films ------------------------------------------------------------------------------
async function showSimilar(film) {
  const mine = ++seq.similar;
  state.similar = {film, list: null};
  renderSimilar();
  renderFilms();
  renderRecs();
  try {
    const answer = await api(`items/${encodeURIComponent(String(film.item))}/similar?n=10`);
    if (mine !== seq.similar) return;
    report("similar", null);
    state.similar = {film, list: answer.similar};
  } catch (err) {
    if (mine !== seq.similar) return;
    state.similar = null;
    report("similar", err);
  }
  renderSimilar();
}

function renderSimilar() {
  const status = $("similar-status");
  const similar = state.similar;
  if (!similar) {
    status.textContent = t("similarPrompt");
    $("similar").replaceChildren();
    return;
  }
  if (!similar.list) {
    status.textContent = t("similarLoading", filmLabel(similar.film));
    return;
  }
  status.textContent = t("similarTo", filmLabel(similar.film));
  $("similar").replaceChildren(...similar.list.map((s) => filmRow(s, fmt(s.similarity, 3))));
}

// --- the taste map ------------------------------------------------------------------------------
async function refreshMap() {
  const mine = ++seq.map;
  const wanted = [...state.films.values(), ...state.recs].map((f) => `&item=${encodeURIComponent(String(f.item))}`);
  try {
    const map = await api(`map?n=${MAP_POINTS}${[...new Set(wanted)].slice(0, 100).join("")}`);
    if (mine !== seq.map) return;
    report("map", null);
    state.map = map;
  } catch (err) {
    if (mine !== seq.map) return;
    report("map", err);
    return;
  }
  renderMap();
}

const W = 720, H = 460, PAD = 28;

function renderMap() {
  const map = state.map;
  const unavailable = $("map-unavailable");
  if (!map) return;
  if (!map.available) {
    const implicit = state.model && !state.model.predicts_ratings;  // the server's reason is in English
    unavailable.textContent = t("mapUnavailable", implicit ? t("mapNoFactors") : map.reason || "?");
    unavailable.title = map.reason || "";
    unavailable.hidden = false;
    $("map-figure").hidden = true;
    $("axes").replaceChildren();
    say("map-hover");
    return;
  }
  unavailable.hidden = true;
  $("map-figure").hidden = false;
  const xs = map.points.map((p) => p.x), ys = map.points.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => PAD + (x - x0) / ((x1 - x0) || 1) * (W - 2 * PAD);
  const sy = (y) => H - PAD - (y - y0) / ((y1 - y0) || 1) * (H - 2 * PAD);
  const rated = new Set([...state.films.keys()]);
  const recs = new Set(state.recs.map((r) => keyOf(r.item)));
  const kind = (p) => (rated.has(keyOf(p.item)) ? "rated" : recs.has(keyOf(p.item)) ? "rec" : "top");
  const order = {top: 0, rec: 1, rated: 2};
  const points = [...map.points].sort((a, b) => order[kind(a)] - order[kind(b)]);

  const root = $("map");
  const nodes = [];
  if (x0 < 0 && x1 > 0) nodes.push(svg("line", {class: "axis", x1: sx(0), x2: sx(0), y1: PAD / 2, y2: H - PAD / 2}));
  if (y0 < 0 && y1 > 0) nodes.push(svg("line", {class: "axis", x1: PAD / 2, x2: W - PAD / 2, y1: sy(0), y2: sy(0)}));
  const xLabel = svg("text", {class: "axis-label", x: W - PAD, y: H - 8, "text-anchor": "end"});
  xLabel.textContent = `PC1 → (${pct(map.axes[0].explained)})`;
  const yLabel = svg("text", {class: "axis-label", x: 8, y: 16});
  yLabel.textContent = `↑ PC2 (${pct(map.axes[1].explained)})`;
  nodes.push(xLabel, yLabel);
  const hoverLabel = svg("text", {class: "label hover"});
  const labels = [];
  for (const p of points) {
    const k = kind(p);
    const cx = sx(p.x), cy = sy(p.y);
    const circle = svg("circle", {cx, cy, r: k === "top" ? 3.5 : k === "rec" ? 6 : 7, class: k,
                                  "data-item": String(p.item)});
    const title = svg("title");
    title.textContent = filmLabel(p);
    circle.append(title);
    if (k !== "top") {
      circle.setAttribute("tabindex", "0");
      circle.setAttribute("role", "button");
      circle.setAttribute("aria-label", t("showSimilar", filmLabel(p)));
      const label = svg("text", {class: "label", x: cx + 9, y: cy + 4});
      label.textContent = short(filmLabel(p));
      labels.push(label);
    }
    const hover = () => {
      hoverLabel.textContent = short(filmLabel(p));
      hoverLabel.setAttribute("x", Math.min(cx + 9, W - 180));
      hoverLabel.setAttribute("y", cy - 8);
      say("map-hover", k === "rated" ? "hoverYours" : k === "rec" ? "hoverRec" : "hoverTop", filmLabel(p));
    };
    circle.addEventListener("mouseenter", hover);
    circle.addEventListener("focus", hover);
    circle.addEventListener("mouseleave", () => { hoverLabel.textContent = ""; });
    circle.addEventListener("click", () => showSimilar(p));
    circle.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        showSimilar(p);
      }
    });
    nodes.push(circle);
  }
  root.replaceChildren(...nodes, ...labels, hoverLabel);
  if (!state.status["map-hover"].length || state.status["map-hover"][0] === "mapPoints") {
    say("map-hover", "mapPoints", map.points.length);
  }

  const names = (list) => list.map(filmLabel).join(", ");
  const [ax, ay] = map.axes;
  $("axes").replaceChildren(
    el("dt", {text: t("axisX", pct(ax.explained))}),
    el("dd", {text: t("axisLow", t("axisLeft"), names(ax.low))}),
    el("dd", {text: t("axisHigh", t("axisRight"), names(ax.high))}),
    el("dt", {text: t("axisY", pct(ay.explained))}),
    el("dd", {text: t("axisLow", t("axisBottom"), names(ay.low))}),
    el("dd", {text: t("axisHigh", t("axisTop"), names(ay.high))}),
    el("dd", {class: "help", text: t("axisMeaning")}),
  );
}

function pct(share) {
  return `${(100 * share).toFixed(0)}%`;
}

function short(text) {
  return text.length > 30 ? `${text.slice(0, 29)}…` : text;
}

// --- languages ----------------------------------------------------------------------------------
function setLanguage(lang) {
  state.lang = lang in STRINGS ? lang : "en";
  try {
    localStorage.setItem(LANG_KEY, state.lang);
  } catch (err) {
    // storage may be disabled; the choice then lasts until the page is left
  }
  document.documentElement.lang = state.lang;
  $("lang").value = state.lang;
  document.title = t("title");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  renderAll();
}

function renderAll() {
  renderModel();
  renderErrors();
  renderRecs();
  renderSimilar();
  renderMap();
  renderStatus();
}

// A status line is kept as [key, ...args], so that it can be said again in another language.
function say(id, ...message) {
  state.status[id] = message;
  renderStatus();
}

function renderStatus() {
  for (const [id, message] of Object.entries(state.status)) $(id).textContent = message.length ? t(...message) : "";
}

function savedLanguage() {
  try {
    return localStorage.getItem(LANG_KEY);
  } catch (err) {
    return null;
  }
}

async function start() {
  const input = $("search");
  input.addEventListener("input", onSearchInput);
  input.addEventListener("keydown", onSearchKey);
  input.addEventListener("blur", () => setTimeout(closeSuggestions, 100));
  $("lang").addEventListener("change", (event) => setLanguage(event.target.value));
  $("clear").addEventListener("click", () => { state.films.clear(); renderFilms(); refresh(); });
  const preferred = (navigator.language || "").toLowerCase().startsWith("zh") ? "zh-TW" : "en";
  setLanguage(savedLanguage() || preferred);
  await loadModel();
  renderAll();
  await refreshMap();
  document.body.dataset.ready = "true";  // (for tests and screenshots: the first answers are in)
}

document.addEventListener("DOMContentLoaded", start);
