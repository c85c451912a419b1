// JSON-RPC 2.0 over the page's WebSocket (/ws on the same origin), with
// reconnection and the daemon's `event` notifications.

export class RpcError extends Error {
  constructor(error) {
    super(error && error.message ? error.message : "unknown error");
    this.code = error ? error.code : 0;
    this.kind = error && error.data ? error.data.error : undefined;
  }
}

export class Rpc {
  constructor({ onEvent, onState }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.pending = new Map();
    this.nextId = 1;
    this.socket = null;
    this.delay = 500;
    this.stopped = false;
  }

  connect() {
    const url = `ws://${location.host}/ws`;
    const socket = new WebSocket(url);
    this.socket = socket;
    this.onState("connecting");
    socket.addEventListener("open", () => {
      this.delay = 500;
      this.onState("open");
    });
    socket.addEventListener("message", (message) => this.receive(message.data));
    socket.addEventListener("close", () => {
      for (const { reject } of this.pending.values()) {
        reject(new RpcError({ code: 0, message: "connection to chatcli lost" }));
      }
      this.pending.clear();
      if (this.stopped) return;
      this.onState("closed");
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    });
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    for (const item of Array.isArray(message) ? message : [message]) {
      if (item.method === "event" && item.params) {
        this.onEvent(item.params.event || {});
      } else if (this.pending.has(item.id)) {
        const { resolve, reject } = this.pending.get(item.id);
        this.pending.delete(item.id);
        if (item.error) reject(new RpcError(item.error));
        else resolve(item.result);
      }
    }
  }

  call(method, params = {}) {
    return new Promise((resolve, reject) => {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        reject(new RpcError({ code: 0, message: "not connected to chatcli" }));
        return;
      }
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }
}
