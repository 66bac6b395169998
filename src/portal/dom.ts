/**
 * The portal's few DOM helpers. Text always goes in through textContent (never innerHTML): what
 * servers answer, and even the patient's own decrypted records, are data, not markup.
 */

type Child = Node | string | null | undefined | false;

/** An element with attributes (strings; `true` for a boolean attribute) and children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Readonly<Record<string, string | boolean>> = {},
  ...children: readonly Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === true) node.setAttribute(name, '');
    else if (value !== false) node.setAttribute(name, value);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return node;
}

/** The element with this id, of the expected kind; throws if the page lacks it. */
export function byId<T extends HTMLElement = HTMLElement>(
  id: string,
  kind: abstract new () => T = HTMLElement as never,
): T {
  const node = document.getElementById(id);
  if (!(node instanceof kind)) throw new Error(`the page has no #${id} of the expected kind`);
  return node;
}

/** A table row of text cells. */
export function row(cells: readonly Child[]): HTMLTableRowElement {
  return el('tr', {}, ...cells.map((c) => el('td', {}, c)));
}

/** Says `text` in the aria-live status region (screen readers announce it). */
export function announce(text: string, kind: 'info' | 'ok' | 'error' = 'info'): void {
  const status = byId('status');
  status.className = kind;
  status.textContent = text;
}

/** The event a finished action sends up the document, so the page can update its controls. */
export const ACTION_DONE = 'portal:action-done';

/**
 * Runs `act` with `button` disabled and busy; an error is announced, never thrown. Afterwards
 * the button is enabled again and ACTION_DONE bubbles from it (the page then decides what is
 * enabled).
 */
export async function busy(
  button: HTMLButtonElement,
  working: string,
  act: () => Promise<void>,
): Promise<void> {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  announce(working);
  try {
    await act();
  } catch (err) {
    announce(err instanceof Error ? err.message : String(err), 'error');
  } finally {
    button.removeAttribute('aria-busy');
    button.disabled = false;
    button.dispatchEvent(new Event(ACTION_DONE, { bubbles: true }));
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const SVG_ALLOWED = new Set(['svg', 'path', 'rect', 'g']);

/**
 * An SVG document made in this page (the QR code) as a node: parsed as XML, and only plain shapes
 * kept (no scripts, no foreign objects, no event or link attributes), copied element by element.
 */
export function safeSvg(text: string): SVGSVGElement {
  const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
  const root = doc.documentElement;
  if (root.namespaceURI !== SVG_NS || root.localName !== 'svg') {
    throw new Error('the QR code is not an SVG image');
  }
  const copy = (from: Element): Element => {
    const to = document.createElementNS(SVG_NS, from.localName);
    for (const a of Array.from(from.attributes)) {
      const name = a.name.toLowerCase();
      if (name.startsWith('on') || name.includes('href') || name === 'style') continue;
      to.setAttribute(a.name, a.value);
    }
    for (const child of Array.from(from.children)) {
      if (child.namespaceURI === SVG_NS && SVG_ALLOWED.has(child.localName)) {
        to.append(copy(child));
      }
    }
    return to;
  };
  return copy(root) as SVGSVGElement;
}
