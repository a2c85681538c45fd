// Swagger UI of aside, driven like a person would in Debian's Chromium (issue 4, part 4).
//
// Opens /docs, authorizes with the bearer token (Authorize dialog), expands POST /data,
// "Try it out", sends a body, reads 201 and the new id from the response panel; then the same with
// GET /data/{id} and checks the value came back. Also checks that the page loaded nothing from
// outside the service and that "Try it out" targets the page's own origin. Screenshots go to
// SCREENSHOT_DIR. Prints one PASS/FAIL line per check and "browser: N passed, N failed".
//
// Env: ASIDE_URL (required, e.g. http://127.0.0.1:8080), API_TOKEN (optional: use the Authorize
// dialog), SCREENSHOT_DIR (default ./screenshots), CHROMIUM (default /usr/bin/chromium).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = (process.env.ASIDE_URL || '').replace(/\/$/, '');
if (!base) {
  console.error('ASIDE_URL is required');
  process.exit(2);
}
const token = process.env.API_TOKEN || '';
const shots = process.env.SCREENSHOT_DIR || 'screenshots';
mkdirSync(shots, { recursive: true });

let passed = 0;
let failed = 0;
function check(ok, name, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
  return ok;
}

// A fresh profile every run; the flags keep Chromium off the (closed) network.
const profile = mkdtempSync(join(tmpdir(), 'aside-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 1000 },
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});
const page = context.pages()[0] || (await context.newPage());
page.setDefaultTimeout(15000);
const foreign = [];
page.on('request', (r) => {
  const u = r.url();
  if (!u.startsWith(base) && !u.startsWith('data:') && !u.startsWith('blob:')) foreign.push(u);
});
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));

// The live response panel of one operation: status code and body text.
async function executeAndRead(op) {
  await op.locator('button.execute').click();
  const row = op.locator('.live-responses-table tbody tr.response').first();
  await row.waitFor();
  const status = (await row.locator('.response-col_status').innerText()).trim();
  const body = (await row.locator('.response-col_description .microlight').first().innerText()).trim();
  const headers = await row.locator('.response-col_description').innerText();
  const url = await op.locator('.request-url pre, .request-url .microlight').first().innerText().catch(() => '');
  return { status, body, headers, url: url.trim() };
}

async function tryItOut(op) {
  await op.locator('.opblock-summary').first().click();
  await op.locator('button.try-out__btn').click();
}

let code = 1;
try {
  // 1. the page
  const resp = await page.goto(`${base}/docs`, { waitUntil: 'networkidle' });
  check(resp && resp.status() === 200, 'GET /docs answers 200', `status ${resp && resp.status()}`);
  await page.locator('.swagger-ui .opblock').first().waitFor();
  const title = await page.locator('.swagger-ui .info .title').first().innerText().catch(() => '');
  check(title.length > 0, 'Swagger UI rendered the spec', `title "${title.split('\n')[0]}"`);
  await page.screenshot({ path: join(shots, '1-docs.png'), fullPage: true });

  // 2. Authorize dialog (when the service has a token)
  if (token) {
    await page.locator('.swagger-ui .auth-wrapper button.authorize').click();
    const modal = page.locator('.dialog-ux .modal-ux');
    await modal.waitFor();
    await modal.locator('input').first().fill(token);
    await page.screenshot({ path: join(shots, '2-authorize.png') });
    await modal.locator('button.authorize').click();
    const logout = modal.locator('button', { hasText: 'Logout' });
    check(await logout.isVisible().catch(() => false), 'Authorize dialog accepted the bearer token');
    await modal.locator('button.btn-done, button.close-modal').first().click();
  }

  // 3. POST /data through "Try it out"
  const key = `browser:${Date.now()}`;
  const value = { from: 'swagger-ui', n: 42, ok: true };
  const post = page.locator('.opblock.opblock-post', {
    has: page.locator('.opblock-summary-path[data-path="/data"]'),
  });
  await tryItOut(post);
  await post.locator('textarea.body-param__text').fill(JSON.stringify({ key, value }, null, 2));
  const created = await executeAndRead(post);
  await post.scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(shots, '3-post-data.png'), fullPage: true });
  check(created.status === '201', 'POST /data from Swagger UI answers 201', `status ${created.status}`);
  check(created.url.startsWith(`${base}/data`), '"Try it out" calls the page\'s own origin',
    `request URL ${created.url}`);
  let id = null;
  try {
    id = JSON.parse(created.body).id;
  } catch {
    /* reported below */
  }
  check(Number.isInteger(id) && id > 0, 'the response panel shows the new record id', `id ${id}`);

  // 4. GET /data/{id}
  const get = page.locator('.opblock.opblock-get', {
    has: page.locator('.opblock-summary-path[data-path="/data/{id}"]'),
  });
  await tryItOut(get);
  await get.locator('tr[data-param-name="id"] input').fill(String(id));
  const fetched = await executeAndRead(get);
  await get.scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(shots, '4-get-data.png'), fullPage: true });
  check(fetched.status === '200', 'GET /data/{id} from Swagger UI answers 200', `status ${fetched.status}`);
  let rec = null;
  try {
    rec = JSON.parse(fetched.body);
  } catch {
    /* reported below */
  }
  check(rec && rec.key === key && JSON.stringify(rec.value) === JSON.stringify(value),
    'GET /data/{id} shows the value that was posted', rec ? JSON.stringify(rec.value) : fetched.body.slice(0, 200));
  check(/x-cache/i.test(fetched.headers), 'the response panel shows the X-Cache header',
    (fetched.headers.match(/x-cache:[^\n]*/i) || ['missing'])[0]);

  // 5. nothing from the internet
  check(foreign.length === 0, 'every asset came from the service itself',
    foreign.length ? foreign.slice(0, 5).join(', ') : `${base} only`);
  check(pageErrors.length === 0, 'no JavaScript errors on the page', pageErrors.slice(0, 3).join(' | '));
  code = failed === 0 ? 0 : 1;
} catch (e) {
  failed++;
  console.log(`FAIL browser run aborted: ${e.message.split('\n')[0]}`);
  await page.screenshot({ path: join(shots, 'error.png'), fullPage: true }).catch(() => {});
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? code : 1);
