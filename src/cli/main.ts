/**
 * `npm run cli -- <group> <command>`: the sidecar's command line, doing what the patient portal
 * (issue 6) does, from the patient's own key file. Commands (args.ts USAGE has every option):
 *
 *   patient register       keys made and sealed in the key file; the register tx signed and sent
 *   patient allow-upload   the patient's upload grant for another institution, via the home
 *   patient grant          a grant (signed Consent + kfrag) to every holder; `--link` also prints
 *                          the share link (issuer: --issuer, else the first --holder)
 *   patient revoke         the signed revocation of a Consent, to every holder
 *   patient records        the patient's records at each --sidecar, decrypted here (records.ts);
 *                          `--out <dir>` writes them as JSON files (mode 0600)
 *   patient audit          who read or wrote what about the patient at each --sidecar
 *   patient consents       the patient's grants (signed Consents) each --sidecar holds, and their state
 *   patient institutions   the network's institutions, reputation and consensus group
 *   patient link           a share link for a grant made before (link.ts), `--qr` as SVG too
 *   patient approve        the patient's signed approval of a SMART app's request (approve.ts),
 *                          or `--decline`
 *   clients add | list     the SMART clients in the data directory (clients.ts)
 *
 *   The patient is named by --identifier and --birth-date (the idHash is computed here), or by
 *   --id-hash; the network by --genesis <file> or the sidecar's --data-dir. The patient's
 *   passphrase comes from $SPCHAIN_PATIENT_PASSPHRASE (or the variable --passphrase-env names).
 *   Output never shows the patient's identifier.
 *
 * Exit codes: 0 done, 1 failed (the message says why), 2 bad usage.
 */
import { parseCommand, USAGE, UsageError } from './args.ts';
import { runCommand } from './commands.ts';

async function main(argv: string[]): Promise<boolean> {
  return runCommand(parseCommand(argv));
}

main(process.argv.slice(2)).then(
  (ok) => process.exit(ok ? 0 : 1),
  (err: unknown) => {
    if (
      err instanceof UsageError ||
      (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    ) {
      console.error(`${(err as Error).message}\n${USAGE}`);
      process.exit(2);
    }
    console.error(`spchain cli: ${(err as Error).message}`);
    process.exit(1);
  },
);
