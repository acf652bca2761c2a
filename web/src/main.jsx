// The page: the start page or the query view, as the URL says; a token
// form when the API asks for one.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { onNeedsToken, token } from './api.js';
import { QueryView } from './query.jsx';
import { Start } from './start.jsx';
import { href, read } from './state.js';

function TokenForm({ done }) {
  const [value, setValue] = useState('');
  return (
    <form class="token" onSubmit={(e) => { e.preventDefault(); token.set(value.trim()); done(); }}>
      <h2>This node needs a token</h2>
      <p>Paste a Kubernetes bearer token (for example from <code>kubectl create token</code>). It is kept for this tab only and sent as <code>Authorization</code>; you see what Kubernetes lets it read.</p>
      <label for="token">Bearer token</label>
      <input id="token" type="password" autocomplete="off" value={value} onInput={(e) => setValue(e.target.value)} />
      <button type="submit" class="primary">Use this token</button>
    </form>
  );
}

function App() {
  const [state, setState] = useState(read);
  const [asking, setAsking] = useState(false);
  const [generation, setGeneration] = useState(0);
  useEffect(() => onNeedsToken(() => setAsking(true)), []);
  useEffect(() => {
    const pop = () => setState(read());
    addEventListener('popstate', pop);
    return () => removeEventListener('popstate', pop);
  }, []);
  /** Changes the state; `push` makes a history entry (else it replaces). */
  const go = (change, push = false) => {
    const next = { ...state, ...change };
    history[push ? 'pushState' : 'replaceState'](null, '', href(next));
    setState(next);
  };
  const open = (e) => {
    if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    history.pushState(null, '', e.currentTarget.getAttribute('href'));
    setState(read());
  };
  return (
    <>
      <header>
        <a href="/" class="home" onClick={open}>monitoring-rs</a>
        {token.get() && <button type="button" onClick={() => { token.set(''); setAsking(true); }}>Forget token</button>}
      </header>
      {asking
        ? <TokenForm done={() => { setAsking(false); setGeneration((g) => g + 1); }} />
        : state.q
          ? <QueryView key={generation} state={state} go={go} />
          : <Start key={generation} open={open} />}
    </>
  );
}

const root = document.getElementById('app');
root.textContent = '';
render(<App />, root);
