/**
 * The patient portal's static assets (DESIGN section 6, issue 6 part 5), served by the patient's
 * home sidecar under `/portal`:
 *
 *   GET /portal, /portal/   index.html (a share link `<origin>/portal/#share=...` lands here too)
 *   GET /portal/app.js      the page's code: src/portal/app.ts and what it imports (the project's
 *                           own src/crypto, src/authz and src/ledger code, @noble, qrcode), bundled
 *                           in memory by esbuild for the browser, once, on first request
 *   GET /portal/app.css     the style sheet
 *
 * No CDN and nothing inline: a strict Content-Security-Policy allows scripts, styles and images
 * from this origin only (and `data:` images); `connect-src *` because the page talks to the
 * sidecars of the other institutions holding the patient's records. `cache-control: no-cache`
 * makes browsers revalidate, so a new sidecar version is never mixed with an old page. Every
 * route is public: the page holds nothing secret; what the patient does with it is authorised by
 * the patient's own signatures, made in the browser.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { fail } from '../fhir/outcome.ts';

export const PORTAL_CSP = [
  "default-src 'self'",
  "img-src 'self' data:",
  "style-src 'self'",
  "script-src 'self'",
  'connect-src *',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export interface PortalOpts {
  /** Where index.html, app.ts and app.css are (default: src/portal beside this file). */
  readonly sourceDir?: string;
  /** Minify the bundle (default true). */
  readonly minify?: boolean;
}

export interface PortalBundle {
  readonly html: string;
  readonly js: string;
  readonly css: string;
  /** Every module esbuild took into app.js (paths relative to the working directory). */
  readonly inputs: readonly string[];
  /** The imports left in app.js (external ones); none expected. */
  readonly externalImports: readonly string[];
}

const DEFAULT_SOURCE = fileURLToPath(new URL('../portal/', import.meta.url));

/** Builds the bundle (esbuild, in memory) and reads the page and its style sheet. */
export async function buildPortalBundle(opts: PortalOpts = {}): Promise<PortalBundle> {
  const dir = opts.sourceDir ?? DEFAULT_SOURCE;
  const result = await esbuild.build({
    entryPoints: [`${dir}/app.ts`],
    bundle: true,
    write: false,
    platform: 'browser',
    format: 'esm',
    minify: opts.minify ?? true,
    target: 'es2022',
    metafile: true,
    logLevel: 'silent',
    legalComments: 'none',
    outfile: 'app.js',
  });
  const out = result.outputFiles.find((f) => f.path.endsWith('.js'));
  if (!out) throw new Error('esbuild produced no app.js');
  const outputs = Object.values(result.metafile.outputs);
  const [html, css] = await Promise.all([
    readFile(`${dir}/index.html`, 'utf8'),
    readFile(`${dir}/app.css`, 'utf8'),
  ]);
  return {
    html,
    js: out.text,
    css,
    inputs: Object.keys(result.metafile.inputs),
    externalImports: outputs.flatMap((o) => o.imports.map((i) => i.path)),
  };
}

const TYPES = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
} as const;

/** Adds the portal's routes to `app` (before it listens). */
export function registerPortalRoutes(app: FastifyInstance, opts: PortalOpts = {}): void {
  let bundle: Promise<PortalBundle> | undefined;
  const load = (): Promise<PortalBundle> => {
    bundle ??= buildPortalBundle(opts).catch((err: unknown) => {
      bundle = undefined; // a later request tries again
      app.log.error({ error: (err as Error)?.name }, 'portal bundle failed to build');
      throw fail(500, 'exception', 'the portal page could not be built');
    });
    return bundle;
  };
  const send = async (reply: FastifyReply, kind: keyof typeof TYPES) => {
    const b = await load();
    return reply
      .code(200)
      .headers({
        'content-type': TYPES[kind],
        'cache-control': 'no-cache',
        'content-security-policy': PORTAL_CSP,
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
      })
      .send(b[kind]);
  };
  const pub = { config: { auth: 'public' as const } };
  app.get('/portal', pub, (_req, reply) => send(reply, 'html'));
  app.get('/portal/', pub, (_req, reply) => send(reply, 'html'));
  app.get('/portal/app.js', pub, (_req, reply) => send(reply, 'js'));
  app.get('/portal/app.css', pub, (_req, reply) => send(reply, 'css'));
}
