// @ts-check
// React binding of the Stagecast client: one AnalysisClient per mounted analysis.
//
//   const { snapshot, events, state, cancel } = useAnalysis({ analysisId, token });
//
// Plain JS with JSDoc types, no build step; `react` (>= 18) is a peer dependency.

import { useCallback, useEffect, useRef, useState } from 'react';

import { AnalysisClient } from './stagecast.js';

/** @typedef {import('./stagecast.js').Snapshot} Snapshot */
/** @typedef {import('./stagecast.js').StoredEvent} StoredEvent */
/** @typedef {import('./stagecast.js').ConnectionState} ConnectionState */
/** @typedef {import('./stagecast.js').CloseInfo} CloseInfo */
/** @typedef {import('./stagecast.js').AnalysisClientOptions} AnalysisClientOptions */
/** @typedef {{ code: import('./types/protocol.js').ErrorCode | 'token_unavailable', message: string }} ClientError */
/**
 * @typedef {object} AnalysisView
 * @property {Snapshot | null} snapshot the client's latest snapshot (null before the first hello)
 * @property {StoredEvent[]} events the stored events delivered so far, in seq order
 * @property {ConnectionState} state the connection state ('connecting' until the client exists)
 * @property {ClientError | null} error the latest `error` event's detail
 * @property {CloseInfo | null} closeInfo the client's closeInfo as of its latest event
 * @property {() => void} cancel client.cancel(); a no-op before the client exists
 * @property {AnalysisClient | null} client the live client (null before the effect ran)
 */

/** What an analysis shows before its client exists (first render, server rendering). */
const EMPTY = { snapshot: null, events: [], state: /** @type {ConnectionState} */ ('connecting'), error: null, closeInfo: null, client: null };
const TYPES = ['snapshot', 'event', 'state', 'error', 'closed', 'terminal'];

/**
 * Follows one analysis: makes an AnalysisClient, connects it, and closes it on unmount or
 * when `analysisId` or `url` change. The other options are read when the client is made;
 * a `token` function is always called in its latest version, so an inline function does
 * not reconnect (a string token is read once: pass a function to refresh tokens).
 * @param {AnalysisClientOptions} options the AnalysisClient's options
 * @returns {AnalysisView}
 */
export function useAnalysis(options) {
  const { analysisId, url, token } = options;
  const tokenRef = useRef(token);
  // Declared before the client's effect, so it runs first.
  useEffect(() => {
    tokenRef.current = token;
  });

  const [view, setView] = useState(
    /** @type {(Omit<AnalysisView, 'cancel'> & { analysisId: string, url?: string }) | null} */ (null),
  );

  useEffect(() => {
    const client = new AnalysisClient({
      ...options,
      token: typeof token === 'function' ? () => {
        const t = tokenRef.current;
        return typeof t === 'function' ? t() : t;
      } : token,
    });
    // Detached before close(): an old client the app still holds can no longer write here.
    const listening = new AbortController();
    /** @param {Event} e */
    const update = (e) => {
      const { detail } = /** @type {CustomEvent} */ (e);
      const { snapshot, state, closeInfo } = client;
      setView((v) => v && {
        ...v,
        snapshot,
        state,
        closeInfo,
        events: e.type === 'event' ? [...v.events, detail] : v.events,
        error: e.type === 'error' ? detail : v.error,
      });
    };
    for (const type of TYPES) client.addEventListener(type, update, { signal: listening.signal });
    setView({ ...EMPTY, state: client.state, client, analysisId, url });
    client.connect();
    return () => {
      listening.abort();
      client.close();
    };
    // Remade for a new analysis or edge only; the other options count at creation.
  }, [analysisId, url]);

  // Until the effect made this analysis' client, the previous one's view would be stale.
  const current = view && view.analysisId === analysisId && view.url === url ? view : EMPTY;
  const { client } = current;
  const cancel = useCallback(() => client?.cancel(), [client]);
  return {
    snapshot: current.snapshot,
    events: current.events,
    state: current.state,
    error: current.error,
    closeInfo: current.closeInfo,
    cancel,
    client,
  };
}
