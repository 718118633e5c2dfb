import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// `npm run admin -- …` on a built tree starts without the compiler (tsc alone takes seconds even
// when it has nothing to do); a changed source is compiled first. Run in a copy of the project,
// so that edits to the working tree meanwhile cannot make a build happen or not.

const ROOT = path.resolve(import.meta.dirname, '..', '..');

/** The project as a clone has it (plus its dist/ as built), node_modules shared. mtimes kept. */
function copyOfProject(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-admin-start-'));
  for (const entry of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'scripts', 'src', 'migrations', 'dist']) {
    if (fs.existsSync(path.join(ROOT, entry))) fs.cpSync(path.join(ROOT, entry), path.join(dir, entry), { recursive: true, preserveTimestamps: true });
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

/**
 * `npm run admin -- ARGS` in `dir`; `ran` is the script of every node process it started (npm
 * included), recorded by a preload that NODE_OPTIONS hands down to all of them.
 */
function npmAdmin(dir: string, args: string[]): Promise<{ code: number | null; output: string; ran: string[] }> {
  const trace = path.join(dir, `trace-${Date.now()}-${Math.random().toString(36).slice(2)}`);
  const preload = path.join(dir, 'trace.cjs');
  fs.writeFileSync(preload, `require('fs').appendFileSync(${JSON.stringify(trace)}, (process.argv[1] || '') + '\\n');\n`);
  return new Promise((resolve) => {
    const child = spawn('npm', ['run', 'admin', '--', ...args], {
      cwd: dir,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, NODE_OPTIONS: `--require ${preload}` },
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code) => {
      const ran = fs.existsSync(trace) ? fs.readFileSync(trace, 'utf8').trim().split('\n') : [];
      resolve({ code, output, ran });
    });
  });
}

const compiled = (ran: string[]) => ran.some((script) => /[/\\]tsc$/.test(script));
const ranAdmin = (ran: string[]) => ran.some((script) => script.endsWith(path.join('dist', 'src', 'admin', 'main.js')));

describe('npm run admin on a built tree', () => {
  it('runs no compiler when nothing changed; compiles first when a source changed; a source that does not compile stops it', async () => {
    const dir = copyOfProject();
    const first = await npmAdmin(dir, ['--help']); // compiles or not, depending on how the tree was built
    expect(first.code, first.output).toBe(0);

    const again = await npmAdmin(dir, ['--help']);
    expect(again.code, again.output).toBe(0);
    expect(again.output).toContain('usage: npm run admin -- COMMAND');
    expect(ranAdmin(again.ran)).toBe(true);
    expect(compiled(again.ran), again.ran.join('\n')).toBe(false);

    // An edited source: compiled before the CLI runs, then not again.
    const edited = path.join(dir, 'src', 'admin', 'commands.ts');
    fs.appendFileSync(edited, '\nexport const addedByTheTest = 1;\n');
    const afterEdit = await npmAdmin(dir, ['--help']);
    expect(afterEdit.code, afterEdit.output).toBe(0);
    expect(compiled(afterEdit.ran)).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'dist', 'src', 'admin', 'commands.js'), 'utf8')).toContain('addedByTheTest');
    expect(compiled((await npmAdmin(dir, ['--help'])).ran)).toBe(false);

    // A migration added: noticed too (migrations/ is compiled with src/).
    const migration = path.join(dir, 'migrations', '9999_test_only.ts');
    fs.writeFileSync(migration, 'export const up = async () => {};\n');
    const afterMigration = await npmAdmin(dir, ['--help']);
    expect(compiled(afterMigration.ran)).toBe(true);
    expect(fs.existsSync(path.join(dir, 'dist', 'migrations', '9999_test_only.js'))).toBe(true);

    // A type error: tsc's message and a failure, not the previous build run as if nothing happened;
    // and again on the next try (a failed build is not remembered as a success).
    const broken = path.join(dir, 'src', 'broken-by-test.ts');
    fs.writeFileSync(broken, "export const n: number = 'not a number';\n");
    for (let attempt = 0; attempt < 2; attempt++) {
      const failed = await npmAdmin(dir, ['--help']);
      expect(failed.code).not.toBe(0);
      expect(failed.output).toContain('src/broken-by-test.ts');
      expect(ranAdmin(failed.ran)).toBe(false);
    }
    fs.rmSync(broken);
    fs.rmSync(path.join(dir, 'dist', 'src', 'broken-by-test.js'), { force: true });
    const fixed = await npmAdmin(dir, ['--help']);
    expect(fixed.code, fixed.output).toBe(0);
    expect(compiled(fixed.ran)).toBe(true); // nothing was built since the failure
    fs.rmSync(dir, { recursive: true, force: true });
  }, 180_000);

  it('the README names the direct way to run the admin CLI, and the npm way', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const operators = readme.slice(readme.indexOf('\n## Operators\n'), readme.indexOf('\n## ', readme.indexOf('\n## Operators\n') + 1));
    expect(operators).toContain('node dist/src/admin/main.js');
    expect(operators).toContain('npm run admin --');
  });
});
