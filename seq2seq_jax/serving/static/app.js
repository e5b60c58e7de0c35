// The page's behaviour: fills the direction selector from GET languages, reads the server's
// limits from GET frontend/settings (LibreTranslate's: characters, alternatives, whether the
// model has attention, whether an API key is required), waits for GET ready (the server
// compiles its batch shapes first), sends POST translate with the text, up to three
// alternatives and the attention weights, and shows the answer. API errors ({"error": ...})
// and network failures go to #status, whose data-state (loading, ready, busy, done, error)
// tells tests and screen readers where the page stands.
'use strict';

(() => {
  const READY_POLL_MS = 1000;

  const $ = (id) => document.getElementById(id);
  const form = $('translate-form');
  const sourceText = $('source-text');
  const direction = $('direction');
  const button = $('translate-button');
  const statusLine = $('status');
  const translation = $('translation');
  const alternatives = $('alternatives');
  const attention = $('attention');

  const apiKey = $('api-key');

  let ready = false;
  let busy = false;
  // What to ask for; frontend/settings narrows it (a server without it gets these).
  const ask = { alternatives: 3, attention: true };

  function setStatus(state, message) {
    statusLine.dataset.state = state;
    statusLine.textContent = message;
    button.disabled = !ready || busy || direction.options.length === 0;
  }

  // The `error` of a JSON error body, else the HTTP status line.
  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && body.error) return String(body.error);
    } catch (_) {
      // not JSON: fall through
    }
    return `HTTP ${response.status} ${response.statusText}`.trim();
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(await errorOf(response));
    return response.json();
  }

  async function loadLanguages() {
    const languages = await getJson('languages');
    const names = new Map(languages.map((lang) => [lang.code, lang.name]));
    const nameOf = (code) => {
      if (names.has(code)) return names.get(code);
      try {
        return new Intl.DisplayNames(['en'], { type: 'language' }).of(code) || code;
      } catch (_) {
        return code; // not a language code Intl knows
      }
    };
    direction.replaceChildren();
    for (const lang of languages) {
      for (const target of lang.targets || []) {
        const option = document.createElement('option');
        option.value = `${lang.code}|${target}`;
        option.textContent = `${lang.name} → ${nameOf(target)}`;
        direction.append(option);
      }
    }
    direction.disabled = false;
    if (direction.options.length === 0) throw new Error('The server offers no direction.');
  }

  async function loadSettings() {
    let settings;
    try {
      settings = await getJson('frontend/settings');
    } catch (_) {
      return; // optional: keep the defaults
    }
    if (Number.isInteger(settings.maxAlternatives)) {
      ask.alternatives = Math.max(0, Math.min(ask.alternatives, settings.maxAlternatives));
    }
    if (settings.attention === false) ask.attention = false;
    if (Number.isInteger(settings.charLimit)) sourceText.maxLength = settings.charLimit;
    $('api-key-label').hidden = !settings.keyRequired;
  }

  async function waitUntilReady() {
    for (;;) {
      try {
        const response = await fetch('ready', { headers: { Accept: 'application/json' } });
        const body = await response.json().catch(() => ({}));
        if (response.ok && body.ready === true) return;
        setStatus('loading', 'Compiling the model…');
      } catch (error) {
        setStatus('loading', `Waiting for the server (${error.message})…`);
      }
      await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
    }
  }

  function showAlternatives(list) {
    alternatives.replaceChildren();
    for (const text of list || []) {
      const item = document.createElement('li');
      item.textContent = text;
      alternatives.append(item);
    }
    $('alternatives-section').hidden = alternatives.children.length === 0;
  }

  // One table per sentence: a header row of source tokens, then a row per output token
  // whose cells are shaded by that token's weight on each source token.
  function heatmap(weights) {
    const table = document.createElement('table');
    table.className = 'heatmap';
    const head = table.createTHead().insertRow();
    head.append(document.createElement('th'));
    for (const token of weights.source_tokens) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.textContent = token;
      head.append(th);
    }
    const body = table.createTBody();
    weights.target_tokens.forEach((token, i) => {
      const row = body.insertRow();
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = token;
      row.append(th);
      weights.source_tokens.forEach((source, j) => {
        const w = Number((weights.weights[i] || [])[j] || 0);
        const cell = row.insertCell();
        cell.dataset.weight = String(w);
        cell.title = `${token} ← ${source}: ${w.toFixed(3)}`;
        cell.style.backgroundColor = `rgba(29, 78, 216, ${Math.min(Math.max(w, 0), 1)})`;
      });
    });
    return table;
  }

  function showAttention(value) {
    attention.replaceChildren();
    const all = Array.isArray(value) ? value : value ? [value] : [];
    for (const weights of all) attention.append(heatmap(weights));
    $('attention-section').hidden = all.length === 0;
  }

  async function translate() {
    const text = sourceText.value.trim();
    if (!text) {
      setStatus('error', 'Type some text first.');
      return;
    }
    const [source, target] = direction.value.split('|');
    busy = true;
    setStatus('busy', 'Translating…');
    try {
      const request = { q: text, source, target };
      if (ask.alternatives > 0) request.alternatives = ask.alternatives;
      if (ask.attention) request.attention = true;
      if (apiKey.value.trim()) request.api_key = apiKey.value.trim();
      const response = await fetch('translate', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(request),
      });
      if (!response.ok) throw new Error(await errorOf(response));
      const answer = await response.json();
      const translated = answer.translatedText;
      translation.textContent = Array.isArray(translated) ? translated.join('\n') : translated;
      showAlternatives(answer.alternatives);
      showAttention(answer.attention);
      busy = false;
      setStatus('done', 'Done.');
    } catch (error) {
      busy = false;
      translation.textContent = ''; // no stale answer beside the error
      showAlternatives([]);
      showAttention(null);
      setStatus('error', `Error: ${error.message}`);
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!button.disabled) translate();
  });
  sourceText.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  (async () => {
    try {
      await loadLanguages();
      await loadSettings();
    } catch (error) {
      setStatus('error', `Error: ${error.message}`);
      return;
    }
    await waitUntilReady();
    ready = true;
    setStatus('ready', 'Ready.');
  })();
})();
