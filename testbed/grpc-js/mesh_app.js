#!/usr/bin/env node
// A proxyless gRPC app for Rudder's end-to-end tests, on real grpc-js with
// @grpc/grpc-js-xds (testbed/tests/proxyless_js.rs), the counterpart of
// testbed/grpc/mesh_app.py (grpcio).
//
//   server --address IP:PORT --name NAME [--fail-every N] [--csds-out FILE]
//       An xDS-enabled server (gRFC A36): it serves once Rudder sends its server
//       Listener, with security from that Listener (XdsServerCredentials). Answers
//       rudder.test.Echo/Call with its name; with --fail-every N every Nth call fails
//       with UNAVAILABLE. Writes its CSDS (what it holds, ACKED or NACKED) to FILE
//       every second.
//   client --target xds:///NAME --calls N [--wait S] [--metadata K=V]...
//       Waits (up to --wait seconds) for a first successful call, then makes N calls
//       and prints one JSON line: successes, failures by status code, answers by
//       server name and its CSDS.
//
// Credentials and the xDS server come from GRPC_XDS_BOOTSTRAP (`xds-server agent
// --grpc --xds-proxy`). Output is JSON lines on stdout; diagnostics go to stderr.
'use strict';

const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');

xds.register();

const identity = (b) => b;
const ECHO = {
  Call: {
    path: '/rudder.test.Echo/Call',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

function parseArgs(argv) {
  const out = { metadata: [], calls: 1, wait: 20, failEvery: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${key} needs a value`);
    switch (key) {
      case '--address': out.address = value; break;
      case '--name': out.name = value; break;
      case '--fail-every': out.failEvery = Number(value); break;
      case '--csds-out': out.csdsOut = value; break;
      case '--target': out.target = value; break;
      case '--calls': out.calls = Number(value); break;
      case '--wait': out.wait = Number(value); break;
      case '--metadata': out.metadata.push(value); break;
      default: throw new Error(`unknown argument ${key}`);
    }
  }
  return out;
}

// The CSDS service grpc-js-xds registers as an admin service, called in process.
let csdsHandlers = null;
grpc.addAdminServicesToServer({
  addService(definition, handlers) {
    if (handlers.FetchClientStatus) csdsHandlers = handlers;
  },
});

function csds() {
  return new Promise((resolve) => {
    if (!csdsHandlers) return resolve([]);
    csdsHandlers.FetchClientStatus({ request: { node_matchers: [] } }, (err, resp) => {
      if (err) return resolve([]);
      const out = [];
      for (const config of resp.config) {
        for (const x of config.generic_xds_configs) {
          const entry = {
            type: x.type_url.split('.').pop(),
            name: x.name,
            status: x.client_status,
          };
          if (x.error_state) entry.error = x.error_state.details;
          out.push(entry);
        }
      }
      resolve(out);
    });
  });
}

function serve(args) {
  let calls = 0;
  const server = new xds.XdsServer();
  server.addService(ECHO, {
    Call(call, callback) {
      calls += 1;
      if (args.failEvery && calls % args.failEvery === 0) {
        callback({ code: grpc.status.UNAVAILABLE, details: 'failing on purpose' });
        return;
      }
      callback(null, Buffer.from(args.name));
    },
  });
  const creds = new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure());
  server.bindAsync(args.address, creds, (err) => {
    if (err) {
      console.error(`bind ${args.address}: ${err.message}`);
      process.exit(1);
    }
    console.log(JSON.stringify({ started: args.address }));
  });
  server.addServingStateListener(args.address, (s) => {
    console.error(`serving state of ${args.address}: ${s.code} ${s.details}`);
  });
  if (args.csdsOut) {
    setInterval(async () => {
      const tmp = `${args.csdsOut}.tmp`;
      fs.writeFileSync(tmp, JSON.stringify(await csds()));
      fs.renameSync(tmp, args.csdsOut);
    }, 1000);
  }
  process.on('SIGTERM', () => server.forceShutdown() || process.exit(0));
}

function call(client, metadata, timeoutSecs) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + timeoutSecs * 1000);
    client.makeUnaryRequest(
      ECHO.Call.path, identity, identity, Buffer.alloc(0), metadata, { deadline },
      (err, answer) => resolve(err ? { err } : { answer: answer.toString() }),
    );
  });
}

async function client(args) {
  const creds = new xds.XdsChannelCredentials(grpc.credentials.createInsecure());
  const c = new grpc.Client(args.target, creds);
  const metadata = new grpc.Metadata();
  for (const kv of args.metadata) {
    const at = kv.indexOf('=');
    metadata.add(kv.slice(0, at), kv.slice(at + 1));
  }
  const result = { ok: 0, failed: {}, answers: {} };
  const deadline = Date.now() + args.wait * 1000;
  for (;;) {
    // Fail fast (not wait-for-ready) so the last error says why.
    const r = await call(c, metadata, 5);
    if (!r.err) break;
    if (Date.now() > deadline) {
      result.unreachable = `${grpc.status[r.err.code]}: ${r.err.details}`;
      result.csds = await csds();
      console.log(JSON.stringify(result));
      process.exit(0);
    }
    await new Promise((res) => setTimeout(res, 200));
  }
  for (let n = 0; n < args.calls; n += 1) {
    const r = await call(c, metadata, 10);
    if (r.err) {
      const code = grpc.status[r.err.code];
      result.failed[code] = (result.failed[code] || 0) + 1;
      console.error(`call failed: ${code}: ${r.err.details}`);
    } else {
      result.ok += 1;
      result.answers[r.answer] = (result.answers[r.answer] || 0) + 1;
    }
  }
  result.csds = await csds();
  console.log(JSON.stringify(result));
  process.exit(0);
}

const [mode, ...rest] = process.argv.slice(2);
const args = parseArgs(rest);
if (mode === 'server') serve(args);
else if (mode === 'client') client(args);
else {
  console.error('usage: mesh_app.js server|client ...');
  process.exit(2);
}
