/**
 * The portal bundle (src/http/portal-assets.ts): esbuild builds src/portal/app.ts for the browser
 * with the project's own crypto, and nothing Node-only is left in it. The only `node:` names in
 * the output are the two runtime probes through `process.getBuiltinModule` (curve backend and
 * AEAD), which find no `process` in a browser and fall back to @noble.
 */
import { describe, expect, it } from 'vitest';
import { buildPortalBundle, PORTAL_CSP } from '../../src/http/portal-assets.ts';

describe('portal bundle', () => {
  it('builds for the browser with no Node imports, and reports its size', async () => {
    const b = await buildPortalBundle();
    console.log(
      `portal bundle: app.js ${(b.js.length / 1024).toFixed(1)} KiB minified, ` +
        `${b.inputs.length} modules; app.css ${b.css.length} B; index.html ${b.html.length} B`,
    );
    expect(b.externalImports).toEqual([]);
    expect(b.js.length).toBeGreaterThan(10_000);
    // No static or dynamic import or require is left (esbuild's metafile above says the same).
    expect(b.js).not.toMatch(/(?:^|[;}])\s*import\s*[{*\w"']/);
    expect(b.js).not.toMatch(/\bimport\s*\(/);
    expect(b.js).not.toMatch(/\brequire\s*\(/);
    expect(b.js).not.toContain('__require');
    const nodeNames = [...b.js.matchAll(/["']node:[a-z_/]+["']/g)].map((m) => m[0]);
    // The CSPRNG and SHA-256 (node:crypto) and the curve addon (node:module) are looked up at run
    // time, and only where getBuiltinModule exists: never in a browser.
    expect(nodeNames.sort()).toEqual(['"node:crypto"', '"node:crypto"', '"node:module"']);
    for (const m of b.js.matchAll(/["']node:[a-z_/]+["']/g)) {
      expect(b.js.slice(Math.max(0, m.index - 40), m.index)).toContain('getBuiltinModule');
    }
    // The project's own code is in it (not a stub), and the native addon is not.
    for (const part of [
      'src/crypto/keyfile.ts',
      'src/crypto/aead.ts',
      'src/crypto/umbral/kfrag.ts',
      'src/authz/grant.ts',
      'src/authz/share-link.ts',
      'src/authz/patient-request.ts',
      'src/ledger/author.ts',
      '@noble/ciphers/chacha.js',
      'qrcode/lib/browser.js',
    ]) {
      expect(b.inputs.some((i) => i.endsWith(part))).toBe(true);
    }
    expect(b.inputs.some((i) => i.includes('secp256k1/') && !i.includes('@noble'))).toBe(false);
    // The page loads only its own script and style sheet: nothing inline, no CDN.
    expect(b.html).toContain('<script type="module" src="/portal/app.js"></script>');
    expect(b.html).toContain('<link rel="stylesheet" href="/portal/app.css">');
    expect(b.html).not.toMatch(/https?:\/\//);
    expect(b.html).not.toMatch(/<script>|\sstyle=|\son[a-z]+=/);
    expect(PORTAL_CSP).toContain("script-src 'self'");
  });
});
