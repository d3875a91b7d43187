// The playground's script (served as /playground/app.js; the page's Content-Security-Policy
// allows no inline script). Model text is untrusted: it only ever reaches the page through
// textContent and element properties, never through an HTML-parsing property or an HTML string.
'use strict';

const KEY_STORAGE = 'lowrank-playground-api-key';
const $ = (id) => document.getElementById(id);
const state = {
  // The API key lives in this variable; it goes to storage only when "remember" is ticked, and
  // only ever travels in the Authorization header.
  apiKey: localStorage.getItem(KEY_STORAGE) || '',
  controller: null,         // the running request's AbortController
  history: [],              // chat messages so far
  adaptersLoaded: null,     // lowrank_adapters_loaded at the last poll
};

function setStatus(text) { $('status').textContent = text; }

function headers(json) {
  const h = {};
  if (json) h['Content-Type'] = 'application/json';
  if (state.apiKey) h['Authorization'] = 'Bearer ' + state.apiKey;
  return h;
}

// Asks for the key (a modal dialog) and resolves once one is given.
function askForKey() {
  return new Promise((resolve) => {
    const dialog = $('key-dialog');
    $('api-key').value = '';
    $('remember').checked = false;
    $('key-form').onsubmit = () => {
      state.apiKey = $('api-key').value.trim();
      if ($('remember').checked) localStorage.setItem(KEY_STORAGE, state.apiKey);
      else localStorage.removeItem(KEY_STORAGE);
      resolve();
    };
    if (!dialog.open) dialog.showModal();
  });
}

// fetch() on the API: a 401 asks for the key and tries once more.
async function api(path, options = {}) {
  for (let attempt = 0; ; ++attempt) {
    const response = await fetch(path, { ...options, headers: headers(options.body !== undefined) });
    if (response.status !== 401 || attempt > 0) return response;
    await askForKey();
  }
}

async function errorText(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (e) {
    return response.statusText;
  }
}

async function refreshModels() {
  const response = await api('/v1/models');
  if (!response.ok) { setStatus('models: ' + await errorText(response)); return; }
  const list = (await response.json()).data || [];
  const select = $('model');
  const chosen = select.value;
  select.replaceChildren();
  for (const m of list) {
    const option = document.createElement('option');
    option.value = m.id;
    option.textContent = m.parent ? m.id + '  (adapter)' : m.id + '  (base model)';
    select.append(option);
  }
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

// /metrics (Prometheus text): the samples the side panel shows.
function parseMetrics(text) {
  const values = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^lowrank_([a-z_]+)(\{[^}]*\})?\s+(\S+)$/);
    if (m) values[m[1] + (m[2] || '')] = Number(m[3]);
  }
  return values;
}

async function refreshMetrics() {
  let values;
  try {
    const response = await fetch('/metrics');
    if (!response.ok) return;
    values = parseMetrics(await response.text());
  } catch (e) {
    setStatus('server unreachable');
    return;
  }
  const show = (id, v) => { $(id).textContent = v === undefined ? '–' : String(v); };
  show('m-running', values.running_requests);
  show('m-waiting', values.queue_length);
  show('m-pool-used', values['pool_pages{state="used"}']);
  show('m-adapter-pages', values.adapter_pages);
  show('m-pool-available', values['pool_pages{state="available"}']);
  show('m-adapters', values.adapters_loaded + ' / ' + values.adapters_resident);
  show('m-tps', values.tokens_per_second === undefined ? undefined : values.tokens_per_second.toFixed(1));
  show('m-finished', values.requests_finished_total);
  show('m-cancelled', values.requests_cancelled_total);
  // Adapters loaded or unloaded through the API: the chooser follows.
  if (state.adaptersLoaded !== null && values.adapters_loaded !== state.adaptersLoaded) refreshModels();
  state.adaptersLoaded = values.adapters_loaded;
}

// "token  logprob" lines for a token's hover.
function alternativesText(chosen, logprob, top) {
  const lines = [JSON.stringify(chosen) + '  ' + logprob.toFixed(3)];
  for (const [token, lp] of top) lines.push('  ' + JSON.stringify(token) + '  ' + lp.toFixed(3));
  return lines.join('\n');
}

function appendText(text, info) {
  const span = document.createElement('span');
  span.className = 'tok';
  span.textContent = text;
  if (info) span.dataset.info = info;
  $('output').append(span);
}

// The hover box: follows the pointer over a token that carries logprobs.
function showTokenInfo(event) {
  const box = $('token-info');
  const info = event.target.dataset && event.target.dataset.info;
  if (!info) { box.hidden = true; return; }
  box.textContent = info;
  box.style.left = (event.clientX + 12) + 'px';
  box.style.top = (event.clientY + 12) + 'px';
  box.hidden = false;
}

// One streamed chunk's choice → text and its hover text.
function chunkContent(choice, chat) {
  const text = chat ? ((choice.delta && choice.delta.content) || '') : (choice.text || '');
  const lp = choice.logprobs;
  let info = '';
  if (lp && chat && Array.isArray(lp.content)) {
    info = lp.content.map((e) => alternativesText(e.token, e.logprob,
      (e.top_logprobs || []).map((t) => [t.token, t.logprob]))).join('\n');
  } else if (lp && !chat && Array.isArray(lp.tokens)) {
    info = lp.tokens.map((t, i) => alternativesText(t, lp.token_logprobs[i],
      Object.entries((lp.top_logprobs && lp.top_logprobs[i]) || {}))).join('\n');
  }
  return { text, info };
}

function requestBody(chat, prompt) {
  const number = (id) => Number($(id).value);
  const body = {
    model: $('model').value,
    max_tokens: number('max_tokens'),
    temperature: number('temperature'),
    top_p: number('top_p'),
    seed: number('seed'),
    stream: true,
    stream_options: { include_usage: true },
  };
  const stop = $('stop').value;
  if (stop) body.stop = [stop];
  const k = number('top_logprobs');
  if (chat) {
    body.messages = state.history.concat([{ role: 'user', content: prompt }]);
    if (k > 0) { body.logprobs = true; body.top_logprobs = k; }
  } else {
    body.prompt = prompt;
    if (k > 0) body.logprobs = k;
  }
  return body;
}

function addTurn(role, text) {
  const div = document.createElement('div');
  div.className = 'turn ' + role;
  div.textContent = text;
  $('transcript').append(div);
}

async function send() {
  const prompt = $('prompt').value;
  if (!prompt || state.controller) return;
  const chat = $('mode').value === 'chat';
  const body = requestBody(chat, prompt);
  $('output').replaceChildren();
  $('finish').textContent = '';
  $('usage').textContent = '';
  setStatus('');
  if (!chat) {
    const p = document.createElement('span');
    p.className = 'prompt';
    p.textContent = prompt;
    $('output').append(p);
  }
  state.controller = new AbortController();
  $('send').disabled = true;
  $('cancel').disabled = false;
  let answer = '';
  let finish = '';
  try {
    const response = await api(chat ? '/v1/chat/completions' : '/v1/completions', {
      method: 'POST', body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!response.ok) throw new Error(response.status + ': ' + await errorText(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data: ')) continue;  // ": keep-alive" comments
          const data = line.slice(6);
          if (data === '[DONE]') continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) {
            $('usage').textContent = 'usage: ' + chunk.usage.prompt_tokens + ' prompt + ' +
              chunk.usage.completion_tokens + ' completion tokens';
          }
          for (const choice of chunk.choices || []) {
            const { text, info } = chunkContent(choice, chat);
            if (text) { appendText(text, info); answer += text; }
            if (choice.finish_reason) finish = choice.finish_reason;
          }
        }
      }
    }
    $('finish').textContent = 'finish reason: ' + (finish || '?');
    if (chat) {
      state.history.push({ role: 'user', content: prompt }, { role: 'assistant', content: answer });
      addTurn('user', prompt);
      addTurn('assistant', answer);
      $('prompt').value = '';
    }
  } catch (e) {
    if (e.name === 'AbortError') $('finish').textContent = 'finish reason: cancelled (stopped here)';
    else setStatus(String(e.message || e));
  } finally {
    state.controller = null;
    $('send').disabled = false;
    $('cancel').disabled = true;
    refreshMetrics();
  }
}

function cancel() {
  // Aborting closes the connection; the server notices at its next write and cancels the request.
  if (state.controller) state.controller.abort();
}

function clearAll() {
  state.history = [];
  $('transcript').replaceChildren();
  $('output').replaceChildren();
  $('finish').textContent = '';
  $('usage').textContent = '';
}

document.addEventListener('DOMContentLoaded', () => {
  $('send').addEventListener('click', send);
  $('cancel').addEventListener('click', cancel);
  $('clear').addEventListener('click', clearAll);
  $('refresh').addEventListener('click', refreshModels);
  $('mode').addEventListener('change', clearAll);
  $('prompt').addEventListener('keydown', (e) => { if (e.key === 'Enter' && e.ctrlKey) send(); });
  $('output').addEventListener('mouseover', showTokenInfo);
  $('output').addEventListener('mouseleave', () => { $('token-info').hidden = true; });
  refreshModels().then(() => { document.body.dataset.ready = '1'; });
  refreshMetrics();
  setInterval(refreshMetrics, 1000);
});
