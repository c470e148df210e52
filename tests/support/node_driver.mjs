// Drives a real pg-boss instance (the pinned one in deploy/pgboss) over a JSON-lines protocol so
// Python tests can check their SQL against what pg-boss itself does.
//
// Start:  deploy/pgboss/node tests/support/node_driver.mjs \
//           --connection-string postgresql://user@host:port/db --schema pgboss --options '{"supervise":false}'
//           [--pgboss-dir tests/versions/node_modules/pg-boss-11.0.0]   (another release's package folder)
//         (or env NODE_BOSS_DATABASE_URL / NODE_BOSS_SCHEMA / NODE_BOSS_OPTIONS).
// Once boss.start() resolves, one line {"ready": true, ...} is written; if it fails,
// {"ready": false, "error": {...}} is written and the process exits 1.
//
// Requests on stdin, one JSON object per line: {"id": n, "op": "...", ...}, handled one at a time in order.
// Responses on stdout, one line each: {"id": n, "result": ...} or {"id": n, "error": {name, message, code}}.
// stdout carries nothing but protocol lines; all logging goes to stderr.
//
// Ops:
//   ping                                   -> "pong"
//   call     {method, args}                -> JSON form of await boss[method](...args)
//            (an arg {"$date": "<iso>"} is passed as a Date; Dates in results become ISO strings)
//   work     {queue, options, behavior}    -> worker id; behavior = {behavior: "complete" | "fail" |
//            "sleep_then_complete" | "sleep_then_fail", output, error_message, sleep_ms, honor_abort}
//   received {queue?, worker?, clear?}     -> jobs the handlers were given, oldest first
//   offWork  {queue, worker?, wait?}       -> null once the worker(s) stopped
//   events   {clear?}                      -> "error"/"warning" events pg-boss emitted
//   stop     {options?}                    -> null, after boss.stop(options); then the process exits
// End of stdin or SIGTERM also stops pg-boss gracefully and exits.

import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pinnedPackage = resolve(here, '..', '..', 'deploy', 'pgboss', 'node_modules', 'pg-boss');

// Anything that writes to stdout through console would corrupt the protocol.
for (const level of ['log', 'info', 'debug', 'warn']) {
  console[level] = (...parts) => console.error(...parts);
}

function log(...parts) {
  console.error('[node_driver]', ...parts);
}

function writeLine(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// Converts any value pg-boss hands back into plain JSON data: Dates to ISO strings, BigInt to
// strings, Map/Set to object/array, Errors to {name, message, code}; drops functions, AbortSignals
// and cycles.
function toPlain(value, seen = new Set()) {
  if (value === undefined || value === null) return null;
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'function' || typeof value === 'symbol') return undefined;
  if (typeof value !== 'object') return value;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (typeof AbortSignal !== 'undefined' && value instanceof AbortSignal) return undefined;
  if (value instanceof Error) return errorToPlain(value);
  if (Buffer.isBuffer(value)) return value.toString('base64');
  if (seen.has(value)) return undefined;
  seen.add(value);
  try {
    if (Array.isArray(value) || value instanceof Set) {
      return Array.from(value, (item) => {
        const plain = toPlain(item, seen);
        return plain === undefined ? null : plain;
      });
    }
    const entries = value instanceof Map ? value.entries() : Object.entries(value);
    const out = {};
    for (const [key, item] of entries) {
      const plain = toPlain(item, seen);
      if (plain !== undefined) out[String(key)] = plain;
    }
    return out;
  } finally {
    seen.delete(value);
  }
}

function errorToPlain(err) {
  if (!(err instanceof Error)) {
    return { name: 'Error', message: String(err), code: null };
  }
  const out = { name: err.name || 'Error', message: err.message, code: err.code ?? null };
  if (err.detail) out.detail = err.detail;
  if (err.stack) out.stack = err.stack;
  return out;
}

// {"$date": "..."} in request args stands for a Date object.
function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === 'object') {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === '$date') return new Date(value.$date);
    return Object.fromEntries(keys.map((k) => [k, revive(value[k])]));
  }
  return value;
}

function parseStartup() {
  const { values } = parseArgs({
    options: {
      'connection-string': { type: 'string' },
      schema: { type: 'string' },
      options: { type: 'string' },
      'pgboss-dir': { type: 'string' }
    }
  });
  packageDir = values['pgboss-dir'] ?? pinnedPackage;
  const connectionString = values['connection-string'] ?? process.env.NODE_BOSS_DATABASE_URL;
  const schema = values.schema ?? process.env.NODE_BOSS_SCHEMA ?? 'pgboss';
  const optionsJson = values.options ?? process.env.NODE_BOSS_OPTIONS ?? '{}';
  if (!connectionString) throw new Error('no connection string (--connection-string or NODE_BOSS_DATABASE_URL)');
  const options = JSON.parse(optionsJson);
  if (!options || typeof options !== 'object' || Array.isArray(options)) {
    throw new Error('--options must be a JSON object of PgBoss constructor options');
  }
  return { ...options, connectionString, schema };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function sleepOrAbort(ms, signal) {
  if (!signal) return sleep(ms);
  return new Promise((resolvePromise, reject) => {
    if (signal.aborted) return reject(new Error('job aborted'));
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolvePromise();
    }, ms);
    function onAbort() {
      clearTimeout(timer);
      reject(new Error('job aborted'));
    }
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

const BEHAVIORS = new Set(['complete', 'fail', 'sleep_then_complete', 'sleep_then_fail']);

// Every job any handler has been given, in arrival order.
const received = [];
// pg-boss "error" and "warning" events.
const events = [];

function makeHandler(queue, workOptions, spec, registration) {
  const behavior = spec.behavior ?? 'complete';
  if (!BEHAVIORS.has(behavior)) {
    throw new TypeError(`unknown behavior ${JSON.stringify(behavior)}; expected one of ${[...BEHAVIORS].join(', ')}`);
  }
  const sleepMs = Number(spec.sleep_ms ?? 0);
  const output = spec.output;
  const errorMessage = spec.error_message ?? 'handler failed on purpose';
  const honorAbort = Boolean(spec.honor_abort);

  return async (jobs) => {
    const batch = Array.isArray(jobs) ? jobs : [jobs];
    const receivedAt = Date.now();
    const records = batch.map((job) => {
      const record = { job, queue, registration, receivedAt, batchSize: batch.length, finishedAt: null, outcome: null };
      received.push(record);
      return record;
    });
    let outcome = 'completed';
    try {
      if (behavior.startsWith('sleep_then_')) {
        await sleepOrAbort(sleepMs, honorAbort ? batch[0]?.signal : null);
      }
      if (behavior.endsWith('fail')) {
        outcome = 'failed';
        throw new Error(errorMessage);
      }
      if (workOptions.perJobResults) {
        return batch.map((job) => ({ id: job.id, status: 'completed', output: output ?? undefined }));
      }
      return output ?? undefined;
    } catch (err) {
      outcome = 'failed';
      throw err;
    } finally {
      const finishedAt = Date.now();
      for (const record of records) {
        record.finishedAt = finishedAt;
        record.outcome = outcome;
      }
    }
  };
}

function recordToPlain(record) {
  const job = toPlain(record.job) ?? {};
  return {
    ...job,
    queue: record.queue,
    workerId: record.registration.id,
    receivedAt: record.receivedAt,
    finishedAt: record.finishedAt,
    outcome: record.outcome,
    batchSize: record.batchSize
  };
}

function matches(record, queue, worker) {
  return (queue == null || record.queue === queue) && (worker == null || record.registration.id === worker);
}

let boss;
let stopping = null;
// The pg-boss package this driver runs: the pinned one unless --pgboss-dir names another.
let packageDir = pinnedPackage;

// pg-boss 10 and 11 are CommonJS exporting the class itself; 12 is an ES module
// exporting { PgBoss }.
async function loadPgBoss(pkg) {
  const module = await import(pathToFileURL(resolve(packageDir, pkg.main ?? 'index.js')).href);
  return module.PgBoss ?? module.default?.PgBoss ?? module.default;
}

async function readPackage() {
  return (await import(pathToFileURL(resolve(packageDir, 'package.json')).href, { with: { type: 'json' } })).default;
}

async function stopBoss(options = {}) {
  if (!stopping) {
    stopping = (async () => {
      try {
        await boss?.stop({ graceful: true, ...options });
      } catch (err) {
        log('stop failed:', err);
        throw err;
      }
    })();
  }
  return stopping;
}

async function handle(request) {
  const op = request.op;
  switch (op) {
    case 'ping':
      return 'pong';
    case 'call': {
      const method = request.method;
      if (typeof method !== 'string' || typeof boss[method] !== 'function') {
        throw new TypeError(`PgBoss has no method ${JSON.stringify(method)}`);
      }
      if (method === 'work') throw new TypeError('use the "work" op, handlers cannot be passed as JSON');
      const args = revive(request.args ?? []);
      const result = await boss[method](...args);
      return result === boss ? null : toPlain(result);
    }
    case 'work': {
      const queue = request.queue;
      const options = request.options ?? {};
      const registration = { id: null };
      const handler = makeHandler(queue, options, request.behavior ?? {}, registration);
      registration.id = await boss.work(queue, options, handler);
      return registration.id;
    }
    case 'received': {
      const { queue = null, worker = null, clear = true } = request;
      const out = [];
      for (let i = 0; i < received.length;) {
        if (matches(received[i], queue, worker)) {
          out.push(recordToPlain(received[i]));
          if (clear) {
            received.splice(i, 1);
            continue;
          }
        }
        i++;
      }
      return out;
    }
    case 'offWork': {
      const options = { wait: request.wait ?? true };
      if (request.worker) options.id = request.worker;
      await boss.offWork(request.queue, options);
      return null;
    }
    case 'events': {
      const out = toPlain(events);
      if (request.clear ?? true) events.length = 0;
      return out;
    }
    case 'stop':
      await stopBoss(request.options ?? {});
      return null;
    default:
      throw new TypeError(`unknown op ${JSON.stringify(op)}`);
  }
}

async function main() {
  let config;
  try {
    config = parseStartup();
    const PgBoss = await loadPgBoss(await readPackage());
    boss = new PgBoss(config);
    boss.on('error', (err) => {
      log('pg-boss error:', err);
      events.push({ type: 'error', at: Date.now(), error: errorToPlain(err) });
    });
    boss.on('warning', (warning) => {
      log('pg-boss warning:', warning?.message ?? warning);
      events.push({ type: 'warning', at: Date.now(), warning: toPlain(warning) });
    });
    await boss.start();
  } catch (err) {
    log('start failed:', err);
    writeLine({ ready: false, error: errorToPlain(err) });
    process.exitCode = 1;
    try { await boss?.stop({ graceful: false }); } catch { /* already failing */ }
    return;
  }

  const pkg = await readPackage();
  writeLine({ ready: true, pid: process.pid, node: process.version, pgboss: pkg.version, schema: config.schema });

  const pending = new Set();
  let queueTail = Promise.resolve();
  let exiting = false;

  async function shutdown(reason) {
    if (exiting) return;
    exiting = true;
    log(`shutting down (${reason})`);
    await Promise.allSettled(pending);
    try { await stopBoss(); } catch { /* logged in stopBoss */ }
    process.exit(process.exitCode ?? 0);
  }

  process.on('SIGTERM', () => { shutdown('SIGTERM'); });
  process.on('SIGINT', () => { shutdown('SIGINT'); });

  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    let request;
    try {
      request = JSON.parse(line);
    } catch (err) {
      writeLine({ id: null, error: { name: 'SyntaxError', message: `bad request line: ${err.message}`, code: null } });
      return;
    }
    const id = request?.id ?? null;
    // One request at a time, in arrival order, so a client that pipes several requests gets the same
    // effect as sending them one by one.
    const task = queueTail = queueTail.then(async () => {
      try {
        const result = await handle(request);
        writeLine({ id, result: result === undefined ? null : result });
      } catch (err) {
        writeLine({ id, error: errorToPlain(err) });
      }
      if (request?.op === 'stop') {
        exiting = true;
        process.exit(process.exitCode ?? 0);
      }
    });
    pending.add(task);
    task.finally(() => pending.delete(task));
  });
  lines.on('close', () => { shutdown('stdin closed'); });
}

process.on('unhandledRejection', (err) => {
  log('unhandled rejection:', err);
  events.push({ type: 'error', at: Date.now(), error: errorToPlain(err) });
});

main();
