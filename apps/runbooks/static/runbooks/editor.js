/*
 * Runbook step editor for the Django admin: action chooser, per-action labelled fields, data
 * picker, drag-and-drop order and a live preview of the exact request each step would send.
 *
 * The server stays the source of truth: each step still submits its `with:` block as the JSON
 * textarea Django renders (hidden here and kept in sync), so save-time validation is unchanged,
 * and the preview is computed by the same Python code as the dry run and the engine.
 *
 * Rows are never moved in the DOM: Django's inline script renumbers form indexes by DOM order
 * when a new row is removed, and existing rows must keep the indexes below INITIAL_FORMS. The
 * order on screen comes from CSS `order`, and the order saved from the `position` inputs.
 */
(function () {
  "use strict";

  const PREFIX = "steps";
  const PREVIEW_DELAY_MS = 350;
  const OWN_FIELDS = ["key", "name", "action", "connection", "on_failure"];

  let config = null;
  let meta = null;
  const actions = {};
  let group = null;
  let previewTimer = null;
  let previewSeq = 0;
  let chooserTarget = null;
  let pickerTarget = null;
  let dragged = null;

  document.addEventListener("DOMContentLoaded", start);

  // --- small DOM helpers ----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function control(row, name) {
    return row.querySelector(`[name$="-${name}"]`);
  }

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // --- rows -----------------------------------------------------------------------------------

  function allRows() {
    return Array.from(group.querySelectorAll(".inline-related")).filter((row) => !row.classList.contains("empty-form"));
  }

  function isDeleted(row) {
    const box = control(row, "DELETE");
    return Boolean(box && box.checked);
  }

  function positionOf(row) {
    const value = parseInt(control(row, "position").value, 10);
    return Number.isFinite(value) ? value : 0;
  }

  /* Rows in the order they will be saved (and shown). */
  function orderedRows() {
    return allRows()
      .map((row, index) => ({ row, index }))
      .sort((a, b) => positionOf(a.row) - positionOf(b.row) || a.index - b.index)
      .map((item) => item.row);
  }

  function liveRows() {
    return orderedRows().filter((row) => !isDeleted(row));
  }

  function renumber(rows) {
    rows.forEach((row, index) => {
      control(row, "position").value = index;
      row.style.order = index;
    });
    relabel();
  }

  function relabel() {
    let number = 0;
    orderedRows().forEach((row) => {
      const title = row.querySelector(".rb-step-title");
      if (!title) return;
      const key = control(row, "key").value.trim();
      const action = actions[control(row, "action").value];
      if (!isDeleted(row)) number += 1;
      title.textContent = `${isDeleted(row) ? "Deleted" : "Step " + number}${key ? " · " + key : ""}${
        action ? " — " + action.label : ""
      }`;
      row.classList.toggle("rb-deleted", isDeleted(row));
    });
  }

  // --- start ----------------------------------------------------------------------------------

  async function start() {
    const configNode = document.getElementById("runbook-editor-config");
    group = document.getElementById(`${PREFIX}-group`);
    if (!configNode || !group) return;
    config = JSON.parse(configNode.textContent);
    try {
      const response = await fetch(config.actionsUrl, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      meta = await response.json();
    } catch (error) {
      group.prepend(el("p", { class: "errornote", text: `The step editor could not load (${error.message}); the JSON fields below still work.` }));
      return;
    }
    meta.actions.forEach((action) => (actions[action.name] = action));
    document.body.classList.add("rb-editor");
    group.querySelector("fieldset.module").classList.add("rb-steps");
    buildDatalists();
    buildToolbar();
    buildChooser();
    buildPicker();
    allRows().forEach((row) => enhanceRow(row, false));
    renumber(orderedRows());
    document.addEventListener("formset:added", (event) => {
      if (event.detail && event.detail.formsetName !== PREFIX) return;
      const row = event.target;
      const rows = orderedRows().filter((other) => other !== row);
      enhanceRow(row, true);
      renumber([...rows, row]);
      openChooser(row);
    });
    document.addEventListener("formset:removed", (event) => {
      if (event.detail && event.detail.formsetName !== PREFIX) return;
      renumber(orderedRows());
      schedulePreview();
    });
    schedulePreview(0);
  }

  // --- toolbar: which incident the preview uses ------------------------------------------------

  function buildToolbar() {
    const select = el("select", { id: "rb-preview-incident", onchange: () => schedulePreview(0) });
    select.append(el("option", { value: meta.sample.value, text: meta.sample.label }));
    meta.incidents.forEach((incident) => select.append(el("option", { value: incident.value, text: incident.label })));
    const toolbar = el(
      "div",
      { class: "rb-toolbar" },
      el("label", { for: "rb-preview-incident", text: "Preview with" }),
      select,
      el("span", { class: "rb-preview-status", id: "rb-preview-status", role: "status", text: "" })
    );
    const heading = group.querySelector("h2");
    heading.after(toolbar);
  }

  function buildDatalists() {
    meta.connections.forEach((connection) => {
      for (const kind of ["services", "responders"]) {
        const list = el("datalist", { id: `rb-${kind}-${connection.name}` });
        connection[kind].forEach((option) => list.append(el("option", { value: option.id, label: option.label })));
        document.body.append(list);
      }
    });
    const names = el("datalist", { id: "rb-connections" });
    meta.connections.forEach((connection) => names.append(el("option", { value: connection.name })));
    document.body.append(names);
    const channels = el("datalist", { id: "rb-channels" });
    (meta.channels || []).forEach((channel) => channels.append(el("option", { value: channel.name, label: channel.events_url })));
    document.body.append(channels);
  }

  // --- one step -------------------------------------------------------------------------------

  function enhanceRow(row, isNew) {
    if (row.dataset.rbReady) return;
    row.dataset.rbReady = "1";
    row.classList.add("rb-step");
    const heading = row.querySelector("h3");
    heading.prepend(
      el("span", { class: "rb-handle", draggable: "true", title: "Drag to reorder", "aria-hidden": "true", text: "⠿" }),
      el("span", { class: "rb-step-title" })
    );
    heading.append(
      el("button", {
        type: "button",
        class: "rb-collapse",
        "aria-expanded": "true",
        title: "Fold or unfold this step",
        onclick: (event) => {
          const folded = row.classList.toggle("rb-collapsed");
          event.currentTarget.setAttribute("aria-expanded", String(!folded));
          event.currentTarget.textContent = folded ? "Unfold" : "Fold";
        },
        text: "Fold",
      }),
      el("span", { class: "rb-move" },
        el("button", { type: "button", class: "rb-up", title: "Move up", "aria-label": "Move step up", onclick: () => move(row, -1), text: "↑" }),
        el("button", { type: "button", class: "rb-down", title: "Move down", "aria-label": "Move step down", onclick: () => move(row, 1), text: "↓" })
      )
    );
    setUpDrag(row);

    const positionRow = row.querySelector(".field-position");
    if (positionRow) positionRow.classList.add("rb-hidden");

    const actionSelect = control(row, "action");
    actionSelect.classList.add("rb-hidden");
    const actionBox = actionSelect.closest(".fieldBox") || actionSelect.parentElement;
    actionBox.append(
      el("span", { class: "rb-action-label" }),
      el("button", { type: "button", class: "button rb-choose-action", onclick: () => openChooser(row), text: "Choose action…" })
    );

    const connection = control(row, "connection");
    connection.setAttribute("list", "rb-connections");

    const json = control(row, "inputs");
    const inputsRow = json.closest(".form-row");
    inputsRow.classList.add("rb-inputs-row");
    const fields = el("div", { class: "rb-fields" });
    inputsRow.append(fields);
    let parsed;
    try {
      // A new step's JSON field renders as "null".
      parsed = JSON.parse(json.value.trim() || "{}") ?? {};
    } catch (error) {
      parsed = undefined;
    }
    if (parsed === undefined || typeof parsed !== "object" || Array.isArray(parsed)) {
      // Not something the field editor can show faithfully: leave the raw JSON to the person.
      fields.append(el("p", { class: "rb-note", text: "These fields are not a JSON object; edit the JSON directly." }));
      row.dataset.rbRaw = "1";
    } else {
      json.closest(".flex-container").classList.add("rb-hidden");
      inputsRow.querySelectorAll(".help").forEach((help) => help.classList.add("rb-hidden"));
      row._rbValues = parsed;
    }
    row.append(el("div", { class: "rb-preview", "aria-live": "polite" }));

    for (const name of ["key", "name", "connection", "on_failure"]) {
      const input = control(row, name);
      if (input) input.addEventListener("input", () => { relabel(); renderFieldsIfNeeded(row, name); schedulePreview(); });
      if (input) input.addEventListener("change", () => { relabel(); schedulePreview(); });
    }
    const del = control(row, "DELETE");
    if (del) del.addEventListener("change", () => { relabel(); schedulePreview(0); });

    renderFields(row);
    showProblems(row, JSON.parse(json.dataset.problems || "{}"));
    if (isNew) row.classList.add("rb-new");
  }

  function renderFieldsIfNeeded(row, changed) {
    // The From placeholder names the connection's default sender.
    if (changed === "connection") renderFields(row);
  }

  function connectionOf(row) {
    const name = (control(row, "connection").value || "default").trim();
    return meta.connections.find((c) => c.name === name) || null;
  }

  function renderFields(row) {
    if (row.dataset.rbRaw) return;
    const container = row.querySelector(".rb-fields");
    const action = actions[control(row, "action").value];
    row.querySelector(".rb-action-label").textContent = action
      ? `${action.category} › ${action.label}`
      : "No action chosen yet";
    row.querySelector(".rb-choose-action").textContent = action ? "Change action…" : "Choose action…";
    container.replaceChildren();
    // Control steps (approval, wait for status) send nothing to PagerDuty: they name no connection.
    const connectionBox = row.querySelector(".fieldBox.field-connection") || row.querySelector(".form-row.field-connection");
    if (connectionBox) connectionBox.classList.toggle("rb-hidden", Boolean(action && action.control));
    if (!action) {
      container.append(el("p", { class: "rb-note", text: "Choose an action to see its fields." }));
      return;
    }
    container.append(el("p", { class: "rb-action-description", text: action.description }));
    const values = row._rbValues || {};
    const connection = connectionOf(row);
    action.fields.forEach((spec) => container.append(fieldEditor(row, spec, values[spec.name] ?? "", connection)));
    Object.keys(values)
      .filter((name) => !action.fields.some((spec) => spec.name === name))
      .forEach((name) => container.append(unknownField(row, name, values[name])));
  }

  function fieldEditor(row, spec, value, connection) {
    const id = `${control(row, "inputs").id}-${spec.name}`;
    const wrapper = el("div", { class: "rb-field", "data-field": spec.name });
    const label = el("label", { for: id, class: spec.required ? "required" : "" }, spec.label);
    let input;
    if (spec.choices.length) {
      input = el("select", { id, class: "rb-input", "data-field": spec.name });
      spec.choices.forEach((choice) =>
        input.append(el("option", { value: choice, text: choice || "(automatic)" }))
      );
      input.value = value;
      if (input.value !== value) {
        // A template or an unexpected value: keep it rather than lose it silently.
        input.append(el("option", { value, text: value }));
        input.value = value;
      }
    } else if (spec.kind && spec.kind !== "text") {
      // custom_details (a mapping) and links (a list of {href, text}): edited as JSON, saved as structure.
      input = el("textarea", { id, rows: 4, class: "rb-input vLargeTextField", "data-field": spec.name, "data-kind": spec.kind, spellcheck: "false" });
      input.value = typeof value === "object" && value !== null ? JSON.stringify(value, null, 2) : value;
      input.placeholder = spec.example ? `e.g. ${spec.example}` : "";
      for (const type of ["keyup", "click", "select", "blur", "input"]) {
        input.addEventListener(type, () => rememberSelection(input));
      }
    } else {
      input = el("input", { type: "text", id, class: "rb-input vTextField", "data-field": spec.name, autocomplete: "off", spellcheck: "false" });
      input.value = value;
      input.placeholder = placeholderFor(spec, connection);
      if (spec.name === "channel") input.setAttribute("list", "rb-channels");
      // What "Insert variable" needs to know: the pre-filled default, and whether one id goes here.
      input.dataset.default = spec.default || "";
      input.dataset.ids = spec.ids || "";
      // Offer what PagerDuty ids the connection knows about: mapped/imported services, imported policies and users.
      if (spec.name === "service_id" && connection) input.setAttribute("list", `rb-services-${connection.name}`);
      if (spec.name === "responder_id" && connection) input.setAttribute("list", `rb-responders-${connection.name}`);
      for (const type of ["keyup", "click", "select", "blur", "input"]) {
        input.addEventListener(type, () => rememberSelection(input));
      }
    }
    input.addEventListener("input", () => fieldChanged(row));
    input.addEventListener("change", () => fieldChanged(row));
    const line = el("div", { class: "rb-field-line" }, input);
    if (!spec.choices.length) {
      line.append(
        el("button", {
          type: "button",
          class: "rb-picker-button",
          title: "Insert a variable",
          "aria-label": `Insert a variable into ${spec.label}`,
          onclick: (event) => openPicker(event.currentTarget, input, row),
          text: "{ } Insert variable",
        })
      );
    }
    wrapper.append(label, line);
    if (spec.help) wrapper.append(el("div", { class: "help rb-help", text: spec.help }));
    wrapper.append(el("div", { class: "rb-rendered" }), el("ul", { class: "errorlist rb-errors" }));
    return wrapper;
  }

  function unknownField(row, name, value) {
    const wrapper = el("div", { class: "rb-field rb-unknown", "data-field": name });
    const structured = typeof value === "object" && value !== null;
    const input = el("input", {
      type: "text",
      class: "rb-input vTextField",
      "data-field": name,
      "data-kind": structured ? "json" : null,
      value: structured ? JSON.stringify(value) : value,
    });
    input.addEventListener("input", () => fieldChanged(row));
    wrapper.append(
      el("label", { text: name }),
      el("div", { class: "rb-field-line" }, input,
        el("button", { type: "button", class: "button", onclick: () => { wrapper.remove(); fieldChanged(row); }, text: "Remove" })),
      el("div", { class: "rb-rendered" }),
      el("ul", { class: "errorlist rb-errors" })
    );
    return wrapper;
  }

  function placeholderFor(spec, connection) {
    if (spec.name === "from" && connection && connection.from_email) {
      return `Empty: the connection's default From (${connection.from_email})`;
    }
    if (spec.default) return `Empty: ${spec.default}`;
    if (spec.example) return `e.g. ${spec.example}`;
    return "";
  }

  function fieldChanged(row) {
    syncJson(row);
    schedulePreview();
  }

  /* The hidden JSON is what Django saves: non-empty fields only, in the action's field order. */
  function syncJson(row) {
    if (row.dataset.rbRaw) return;
    const values = {};
    row.querySelectorAll(".rb-fields .rb-input").forEach((input) => {
      if (input.value === "") return;
      values[input.dataset.field] = input.dataset.kind ? structuredValue(input.value) : input.value;
    });
    row._rbValues = values;
    control(row, "inputs").value = JSON.stringify(values, null, 2);
  }

  /* JSON when it parses to an object or a list; otherwise the text as typed, which validation
     then refuses with a message on the field ("must be a mapping…"). */
  function structuredValue(text) {
    try {
      const parsed = JSON.parse(text);
      return parsed && typeof parsed === "object" ? parsed : text;
    } catch (error) {
      return text;
    }
  }

  function rowInputs(row) {
    if (row.dataset.rbRaw) {
      try {
        const parsed = JSON.parse(control(row, "inputs").value.trim() || "{}");
        return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
      } catch (error) {
        return {};
      }
    }
    return row._rbValues || {};
  }

  // --- action chooser -------------------------------------------------------------------------

  function buildChooser() {
    const search = el("input", { type: "search", class: "rb-chooser-search", placeholder: "Search actions…", "aria-label": "Search actions" });
    const list = el("div", { class: "rb-chooser-list" });
    const categories = [];
    meta.actions.forEach((action) => {
      if (!categories.includes(action.category)) categories.push(action.category);
    });
    categories.forEach((category) => {
      const section = el("section", { class: "rb-chooser-category" });
      section.append(el("h3", { text: category }));
      meta.actions
        .filter((action) => action.category === category)
        .forEach((action) =>
          section.append(
            el("button", { type: "button", class: "rb-chooser-action", "data-action": action.name, onclick: () => chooseAction(action.name) },
              el("strong", { text: action.label }),
              el("span", { text: action.description }))
          )
        );
      list.append(section);
    });
    search.addEventListener("input", () => {
      const needle = search.value.trim().toLowerCase();
      list.querySelectorAll(".rb-chooser-action").forEach((button) => {
        button.hidden = needle && !button.textContent.toLowerCase().includes(needle);
      });
      list.querySelectorAll(".rb-chooser-category").forEach((section) => {
        section.hidden = !section.querySelector(".rb-chooser-action:not([hidden])");
      });
    });
    const dialog = el("dialog", { id: "rb-action-chooser", class: "rb-chooser", "aria-labelledby": "rb-chooser-title" },
      el("h2", { id: "rb-chooser-title", text: "Select action" }),
      search,
      list,
      el("div", { class: "rb-chooser-footer" },
        el("button", { type: "button", class: "button rb-chooser-cancel", onclick: () => dialog.close(), text: "Cancel" }))
    );
    document.body.append(dialog);
  }

  function openChooser(row) {
    chooserTarget = row;
    const dialog = document.getElementById("rb-action-chooser");
    dialog.querySelector(".rb-chooser-search").value = "";
    dialog.querySelector(".rb-chooser-search").dispatchEvent(new Event("input"));
    dialog.showModal();
  }

  function chooseAction(name) {
    const row = chooserTarget;
    document.getElementById("rb-action-chooser").close();
    if (!row) return;
    const action = actions[name];
    control(row, "action").value = name;
    // Keep what was typed into fields the new action also has; fill the rest with defaults.
    const old = rowInputs(row);
    const values = {};
    action.fields.forEach((spec) => {
      if (old[spec.name]) values[spec.name] = old[spec.name];
      else if (spec.default) values[spec.name] = spec.default;
    });
    row._rbValues = values;
    const key = control(row, "key");
    if (!key.value) key.value = suggestKey(name, row);
    const stepName = control(row, "name");
    if (!stepName.value) stepName.value = action.label;
    renderFields(row);
    syncJson(row);
    relabel();
    schedulePreview(0);
    key.focus();
  }

  function suggestKey(actionName, row) {
    const base = actionName.split(".").pop().replace(/[^a-z0-9_]/g, "_");
    const taken = new Set(allRows().filter((other) => other !== row).map((other) => control(other, "key").value));
    let key = base;
    for (let n = 2; taken.has(key); n += 1) key = `${base}_${n}`;
    return key;
  }

  // --- data picker ----------------------------------------------------------------------------

  function buildPicker() {
    const search = el("input", { type: "search", class: "rb-picker-search", placeholder: "Search variables…", "aria-label": "Search variables" });
    const list = el("ul", { class: "rb-picker-list", role: "listbox" });
    const picker = el("div", { class: "rb-picker", id: "rb-picker", role: "dialog", "aria-label": "Insert a variable", hidden: true },
      search, list);
    search.addEventListener("input", () => filterPicker());
    search.addEventListener("keydown", (event) => {
      if (event.key === "Escape") closePicker(true);
      if (event.key === "Enter") {
        event.preventDefault();
        const first = list.querySelector(".rb-picker-item:not([hidden]) button");
        if (first) first.click();
      }
    });
    document.addEventListener("mousedown", (event) => {
      if (!picker.hidden && !picker.contains(event.target) && !event.target.closest(".rb-picker-button")) closePicker(false);
    });
    document.body.append(picker);
  }

  function variablesFor(row) {
    const groups = [
      ["Activity — the incident", meta.variables.Activity],
      ["PagerDuty", meta.variables.PagerDuty],
    ];
    const above = [];
    for (const other of liveRows()) {
      if (other === row) break;
      const key = control(other, "key").value.trim();
      const action = actions[control(other, "action").value];
      if (!key || !action) continue;
      Object.entries(action.outputs).forEach(([output, description]) =>
        above.push({ name: `steps.${key}.${output}`, description: `${description} (step ${key})`, example: "" })
      );
    }
    groups.push(["Steps above", above]);
    return groups;
  }

  function openPicker(button, input, row) {
    const picker = document.getElementById("rb-picker");
    if (!picker.hidden && pickerTarget === input) {
      closePicker(true);
      return;
    }
    pickerTarget = input;
    const list = picker.querySelector(".rb-picker-list");
    list.replaceChildren();
    variablesFor(row).forEach(([title, variables]) => {
      list.append(el("li", { class: "rb-picker-group", text: title }));
      if (!variables.length) {
        list.append(el("li", { class: "rb-picker-empty", text: "No step above produces outputs yet." }));
      }
      variables.forEach((variable) =>
        list.append(
          el("li", { class: "rb-picker-item", role: "option", "data-name": variable.name },
            el("button", { type: "button", onclick: () => insertVariable(variable.name) },
              el("code", { text: variable.name }),
              el("span", { class: "rb-picker-description", text: variable.description }),
              variable.example ? el("span", { class: "rb-picker-example", text: `e.g. ${variable.example}` }) : null))
        )
      );
    });
    const box = button.getBoundingClientRect();
    picker.style.top = `${window.scrollY + box.bottom + 4}px`;
    picker.style.left = `${Math.max(8, window.scrollX + box.right - 420)}px`;
    picker.hidden = false;
    const search = picker.querySelector(".rb-picker-search");
    search.value = "";
    filterPicker();
    search.focus();
  }

  function filterPicker() {
    const picker = document.getElementById("rb-picker");
    const needle = picker.querySelector(".rb-picker-search").value.trim().toLowerCase();
    picker.querySelectorAll(".rb-picker-item").forEach((item) => {
      item.hidden = Boolean(needle) && !item.textContent.toLowerCase().includes(needle);
    });
    // A group title stays only while something under it matches.
    picker.querySelectorAll(".rb-picker-group").forEach((title) => {
      let next = title.nextElementSibling;
      let visible = false;
      while (next && !next.classList.contains("rb-picker-group")) {
        if (next.classList.contains("rb-picker-item") && !next.hidden) visible = true;
        if (next.classList.contains("rb-picker-empty")) next.hidden = Boolean(needle);
        next = next.nextElementSibling;
      }
      title.hidden = Boolean(needle) && !visible;
    });
  }

  function closePicker(refocus) {
    const picker = document.getElementById("rb-picker");
    picker.hidden = true;
    if (refocus && pickerTarget) pickerTarget.focus();
  }

  /* The caret is lost when the picker takes focus, so every interaction with a field records it;
     a field never touched gets the variable appended. */
  function rememberSelection(input) {
    input._rbSelection = { start: input.selectionStart, end: input.selectionEnd };
  }

  /* Where the chosen variable goes: over the selection if there is one; over the whole value when
     the field holds one id (two variables there render to two ids glued together) or still holds
     its pre-filled default (appending to `{{pagerduty.incident_id}}` is never what was meant);
     otherwise at the caret, or appended to a field never touched. */
  function insertionRange(input) {
    const length = input.value.length;
    const selection = input._rbSelection || { start: length, end: length };
    const start = Math.min(selection.start, length);
    const end = Math.min(selection.end, length);
    if (start !== end) return { start, end };
    const value = input.value.trim();
    if (input.dataset.ids === "one" || (value && value === (input.dataset.default || "").trim())) {
      return { start: 0, end: length };
    }
    return { start, end };
  }

  function insertVariable(name) {
    const input = pickerTarget;
    closePicker(false);
    if (!input) return;
    const { start, end } = insertionRange(input);
    let tag = `{{${name}}}`;
    // A list of ids keeps its separator: PX1 then a variable must not become PX1{{…}}.
    if (input.dataset.ids === "many" && start === end && start > 0 && !/[,\s]$/.test(input.value.slice(0, start))) {
      tag = `, ${tag}`;
    }
    input.value = input.value.slice(0, start) + tag + input.value.slice(end);
    const caret = start + tag.length;
    input.focus();
    input.setSelectionRange(caret, caret);
    input._rbSelection = { start: caret, end: caret };
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  // --- reordering -----------------------------------------------------------------------------

  function move(row, delta) {
    const rows = orderedRows();
    const from = rows.indexOf(row);
    const to = Math.max(0, Math.min(rows.length - 1, from + delta));
    if (from === to) return;
    rows.splice(from, 1);
    rows.splice(to, 0, row);
    renumber(rows);
    schedulePreview(0);
  }

  function setUpDrag(row) {
    const handle = row.querySelector(".rb-handle");
    handle.addEventListener("dragstart", (event) => {
      dragged = row;
      row.classList.add("rb-dragging");
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", row.id);
      event.dataTransfer.setDragImage(row.querySelector("h3"), 10, 10);
      // Steps are tall; while one is dragged every step shrinks to its title so all targets fit
      // on screen. Deferred: changing the layout inside dragstart cancels the drag in Chromium.
      setTimeout(() => {
        group.classList.add("rb-reordering");
        row.scrollIntoView({ block: "center" });
      }, 0);
    });
    handle.addEventListener("dragend", () => {
      group.classList.remove("rb-reordering");
      row.classList.remove("rb-dragging");
      allRows().forEach((other) => other.classList.remove("rb-drop-before", "rb-drop-after"));
      dragged = null;
    });
    row.addEventListener("dragover", (event) => {
      if (!dragged || dragged === row) return;
      event.preventDefault();
      const after = event.clientY > row.getBoundingClientRect().top + row.offsetHeight / 2;
      row.classList.toggle("rb-drop-after", after);
      row.classList.toggle("rb-drop-before", !after);
    });
    row.addEventListener("dragleave", () => row.classList.remove("rb-drop-before", "rb-drop-after"));
    row.addEventListener("drop", (event) => {
      if (!dragged || dragged === row) return;
      event.preventDefault();
      const after = event.clientY > row.getBoundingClientRect().top + row.offsetHeight / 2;
      const rows = orderedRows().filter((other) => other !== dragged);
      rows.splice(rows.indexOf(row) + (after ? 1 : 0), 0, dragged);
      row.classList.remove("rb-drop-before", "rb-drop-after");
      renumber(rows);
      schedulePreview(0);
    });
  }

  // --- live preview ---------------------------------------------------------------------------

  function schedulePreview(delay) {
    clearTimeout(previewTimer);
    // Bumped now, not when the request starts: an answer already on its way describes an older draft.
    const seq = ++previewSeq;
    setStatus("Updating preview…", "busy");
    previewTimer = setTimeout(() => runPreview(seq), delay === undefined ? PREVIEW_DELAY_MS : delay);
  }

  function setStatus(text, state) {
    const status = document.getElementById("rb-preview-status");
    if (!status) return;
    status.textContent = text;
    status.dataset.state = state;
  }

  async function runPreview(seq) {
    const rows = liveRows();
    const choice = document.getElementById("rb-preview-incident").value;
    const payload = {
      incident: choice === "sample" ? "" : choice,
      sample: choice === "sample",
      steps: rows.map((row) => ({
        key: control(row, "key").value.trim(),
        name: control(row, "name").value,
        action: control(row, "action").value,
        connection: (actions[control(row, "action").value] || {}).control ? "" : control(row, "connection").value.trim() || "default",
        on_failure: control(row, "on_failure").value,
        inputs: rowInputs(row),
      })),
    };
    let data;
    try {
      const response = await fetch(config.previewUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify(payload),
      });
      data = await response.json();
      if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
    } catch (error) {
      if (seq === previewSeq) setStatus(`Preview unavailable: ${error.message}`, "error");
      return;
    }
    if (seq !== previewSeq) return; // a newer edit is already on its way
    rows.forEach((row, index) => showPreview(row, data.steps[index]));
    allRows().filter(isDeleted).forEach((row) => row.querySelector(".rb-preview").replaceChildren());
    const problems = data.steps.filter((step) => Object.keys(step.errors).length || step.step_errors.length).length;
    setStatus(
      problems ? `${problems} step${problems > 1 ? "s have" : " has"} problems — see the highlighted fields` : `Preview up to date · ${data.incident.label}`,
      problems ? "error" : "ok"
    );
  }

  function showProblems(row, errors) {
    row.querySelectorAll(".rb-invalid").forEach((node) => node.classList.remove("rb-invalid"));
    row.querySelectorAll(".rb-own-errors").forEach((node) => node.remove());
    row.querySelectorAll(".rb-field .rb-errors").forEach((list) => list.replaceChildren());
    const inputsErrorList = control(row, "inputs").closest(".form-row").querySelector(":scope > ul.errorlist");
    let shownOnFields = false;
    for (const [name, messages] of Object.entries(errors)) {
      const field = row.querySelector(`.rb-field[data-field="${name}"]`);
      if (field) {
        field.classList.add("rb-invalid");
        messages.forEach((message) => field.querySelector(".rb-errors").append(el("li", { text: message })));
        shownOnFields = true;
        continue;
      }
      // The field's own box when it shares a line with others, else its line.
      const own = OWN_FIELDS.includes(name)
        ? row.querySelector(`.fieldBox.field-${name}`) || row.querySelector(`.form-row.field-${name}`)
        : null;
      const target = own || row.querySelector(".rb-fields");
      if (!target) continue;
      target.classList.add("rb-invalid");
      target.append(el("ul", { class: "errorlist rb-own-errors" }, messages.map((m) => el("li", { text: `${own ? "" : name + ": "}${m}` }))));
    }
    // Once each message sits on its own field, Django's combined list above would only repeat them.
    if (inputsErrorList && shownOnFields) inputsErrorList.classList.add("rb-hidden");
  }

  function showPreview(row, step) {
    if (!step) return;
    showProblems(row, step.errors);
    // Visible on the title too, so a folded step with a problem is not missed.
    row.classList.toggle("rb-has-problems", step.status === "error" || step.step_errors.length > 0);
    row.querySelectorAll(".rb-field").forEach((field) => {
      const rendered = step.rendered[field.dataset.field];
      const box = field.querySelector(".rb-rendered");
      box.replaceChildren();
      if (rendered !== undefined && rendered !== "" && !step.errors[field.dataset.field]) {
        const shown = typeof rendered === "object" ? JSON.stringify(rendered) : rendered;
        box.append(el("span", { class: "rb-rendered-arrow", text: "→ " }), highlightPlaceholders(shown));
      }
    });
    const panel = row.querySelector(".rb-preview");
    panel.replaceChildren();
    panel.dataset.status = step.status;
    panel.append(
      el("div", { class: "rb-preview-head" },
        el("strong", { text: "Preview" }),
        el("span", { class: `rb-badge rb-badge-${step.status}`, text: step.status }),
        step.request && !step.sends_request ? el("span", { class: "rb-badge", text: "not sent" }) : null)
    );
    if (step.error && step.status !== "error") panel.append(el("p", { class: "rb-note", text: step.error }));
    step.step_errors.forEach((message) => panel.append(el("p", { class: "rb-step-error", text: message })));
    if (step.status === "error" && Object.keys(step.errors).length) {
      panel.append(el("p", { class: "rb-step-error", text: "Fix the highlighted fields to see the request." }));
    }
    step.notes.forEach((note) => panel.append(el("p", { class: "rb-note", text: note })));
    (step.warnings || []).forEach((warning) => panel.append(el("p", { class: "rb-warning", text: `Warning: ${warning}` })));
    const derived = step.derived || {};
    const facts = el("dl", { class: "rb-derived" });
    if (derived.urgency) facts.append(el("dt", { text: "Urgency" }), el("dd", { class: "rb-derived-urgency", text: `${derived.urgency} (${derived.urgency_source})` }));
    if (derived.service_id) facts.append(el("dt", { text: "Service" }), el("dd", { class: "rb-derived-service", text: `${derived.service_id} (${derived.service_source})` }));
    if (derived.incident_key) facts.append(el("dt", { text: "Incident key" }), el("dd", { class: "rb-derived-key", text: derived.incident_key }));
    if (derived.severity) facts.append(el("dt", { text: "Severity" }), el("dd", { class: "rb-derived-severity", text: `${derived.severity} (${derived.severity_source})` }));
    if (derived.dedup_key) facts.append(el("dt", { text: "Dedup key" }), el("dd", { class: "rb-derived-dedup", text: derived.dedup_key_source ? `${derived.dedup_key} (${derived.dedup_key_source})` : derived.dedup_key }));
    if (facts.children.length) panel.append(facts);
    if (step.request) {
      panel.append(
        el("p", { class: "rb-request-line" },
          el("code", { class: "rb-method", text: step.request.method }), " ",
          el("code", { class: "rb-url" }, highlightPlaceholders(step.request.url)))
      );
      const headers = el("table", { class: "rb-headers" });
      Object.entries(step.request.headers).forEach(([name, value]) =>
        headers.append(el("tr", {}, el("th", { text: name }), el("td", {}, el("code", { text: value }))))
      );
      panel.append(el("details", { class: "rb-headers-details" }, el("summary", { text: "Headers (secrets redacted)" }), headers));
      panel.append(el("pre", { class: "rb-body" }, highlightPlaceholders(JSON.stringify(step.request.body, null, 2))));
    }
    if (step.placeholders.length) {
      panel.append(
        el("ul", { class: "rb-placeholders" },
          step.placeholders.map((p) => el("li", {}, el("code", { class: "rb-placeholder", text: p.value }), ` — ${p.reason}`)))
      );
    }
  }

  function highlightPlaceholders(text) {
    const fragment = document.createDocumentFragment();
    const pattern = /<(steps\.[a-z0-9_]+\.[A-Za-z0-9_]+|user id for [^>]+)>/g;
    let last = 0;
    for (const match of String(text).matchAll(pattern)) {
      fragment.append(text.slice(last, match.index), el("mark", { class: "rb-placeholder", text: match[0] }));
      last = match.index + match[0].length;
    }
    fragment.append(String(text).slice(last));
    return fragment;
  }
})();
