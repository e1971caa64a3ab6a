// A PartyServer relay (issue 7 peer): one Durable Object per analysis, SQLite history,
// the publish and WebSocket routes of the v1 contract. Tokens are not verified.
import { routePartykitRequest, Server, type Connection, type ConnectionContext } from "partyserver";

interface Env {
  Analyses: DurableObjectNamespace;
}

const ID = /^[A-Za-z0-9_-]{1,64}$/;

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** `/v1/analyses/{id}/{route}` -> route, or null. */
function routeOf(url: URL): string | null {
  const parts = url.pathname.split("/").filter(Boolean);
  return parts.length === 4 && ID.test(parts[2]) ? parts[3] : null;
}

/** `since=S` as a non-negative integer, or null when absent or malformed. */
function sinceOf(url: URL): number | null {
  const s = url.searchParams.get("since");
  return s !== null && /^\d+$/.test(s) ? Number(s) : null;
}

export class Analysis extends Server<Env> {
  // PartyServer's README: hibernation lets the object sleep while sockets stay open;
  // lifecycle hooks still run on wake.
  static options = { hibernate: true };

  #lastSeq = 0;

  onStart() {
    const sql = this.ctx.storage.sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS events (
      seq INTEGER PRIMARY KEY,
      event_id TEXT NOT NULL,
      stored TEXT NOT NULL
    )`);
    sql.exec("CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events(event_id)");
    this.#lastSeq = (sql.exec("SELECT coalesce(max(seq), 0) AS s FROM events").one().s as number);
  }

  async onRequest(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const route = routeOf(url);
    if (route === "events" && request.method === "POST") return this.#publish(request);
    if (route === "events" && request.method === "GET") {
      const since = sinceOf(url) ?? 0;
      const limit = Math.min(Number(url.searchParams.get("limit") ?? 1000) || 1000, 1000);
      const rows = this.ctx.storage.sql
        .exec("SELECT stored FROM events WHERE seq > ? ORDER BY seq LIMIT ?", since, limit)
        .toArray();
      const body = `{"events":[${rows.map((r) => r.stored).join(",")}],"last_seq":${this.#lastSeq}}`;
      return new Response(body, { headers: { "content-type": "application/json" } });
    }
    return json({ error: "not found" }, 404);
  }

  async #publish(request: Request): Promise<Response> {
    // The bearer token is accepted and not verified: this peer measures relaying.
    let body: any;
    try {
      body = await request.json();
    } catch {
      return json({ error: "body: not JSON" }, 400);
    }
    const events = body?.events;
    if (!Array.isArray(events) || events.length < 1 || events.length > 100) {
      return json({ error: "events: 1 to 100 events" }, 400);
    }
    if (!events.every((e) => e && typeof e === "object" && typeof e.id === "string")) {
      return json({ error: "every event needs a string id" }, 400);
    }
    // From here to the broadcast nothing awaits, so batches are stored and sent whole and
    // in seq order; the transaction makes the batch atomic on disk.
    const ts = Date.now();
    const sql = this.ctx.storage.sql;
    const fresh: string[] = [];
    let duplicates = 0;
    this.ctx.storage.transactionSync(() => {
      for (const event of events) {
        const seq = this.#lastSeq + 1;
        const stored = JSON.stringify({ seq, ts, event });
        const inserted = sql
          .exec(
            "INSERT INTO events (seq, event_id, stored) VALUES (?, ?, ?) ON CONFLICT(event_id) DO NOTHING RETURNING seq",
            seq,
            event.id,
            stored,
          )
          .toArray().length;
        if (inserted) {
          this.#lastSeq = seq;
          fresh.push(stored);
        } else {
          duplicates += 1;
        }
      }
    });
    for (const stored of fresh) this.broadcast(`{"type":"event",${stored.slice(1)}`);
    return json({
      accepted: fresh.length,
      duplicates,
      last_seq: this.#lastSeq,
      cancel_requested: false,
    });
  }

  onConnect(connection: Connection, ctx: ConnectionContext) {
    const url = new URL(ctx.request.url);
    if (routeOf(url) !== "ws") {
      connection.close(4404, "not found");
      return;
    }
    // Synchronous from here: no broadcast can come between the replay and the live events.
    const since = sinceOf(url);
    connection.send(
      JSON.stringify({
        type: "hello",
        analysis_id: this.name,
        snapshot: { last_seq: this.#lastSeq },
        resumed_from: since,
        recovered: true,
      }),
    );
    if (since !== null) {
      for (const row of this.ctx.storage.sql.exec(
        "SELECT stored FROM events WHERE seq > ? ORDER BY seq",
        since,
      )) {
        connection.send(`{"type":"event",${(row.stored as string).slice(1)}`);
      }
    }
  }

  onMessage() {
    // Subscribers have nothing to say; anything they send is ignored.
  }
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response("ok");
    const id = url.pathname.split("/")[3];
    if (url.pathname.startsWith("/v1/analyses/") && !(id && ID.test(id))) {
      return json({ error: "analysis id: 1 to 64 of [A-Za-z0-9_-]" }, 400);
    }
    // `/v1/analyses/{id}/...` is PartyServer's `/{prefix}/{party}/{room}/...` with prefix
    // "v1": party "analyses" (the kebab-cased binding name `Analyses`), room = the id.
    return (
      (await routePartykitRequest(request, env, { prefix: "v1" })) ??
      json({ error: "not found" }, 404)
    );
  },
} satisfies ExportedHandler<Env>;
