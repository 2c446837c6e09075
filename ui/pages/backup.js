// Pages: backup and restore of the data directory, and restore onto a fresh server.
import {request} from '../api.js';
import {formError} from '../feedback.js';
import {route} from '../router.js';
import {$app, bindShell, shell} from '../shell.js';

async function restoreForm(f, after) {
  const data = new FormData(); data.append('file', f.file.files[0]); data.append('password', f.pw.value);
  await request('POST', '/api/restore', {body: data});
  after();
}
function restoreFormHtml() {
  return `<form id="rf"><h3>Restore</h3><label for="file">Backup file</label><input id="file" name="file" type="file" required>
    <label for="pw">Its password (if it was given one)</label><input id="pw" type="password" autocomplete="off">
    <div class="error" role="alert"></div><button class="danger">Restore</button></form>`;
}
export async function pageBackup() {
  $app.innerHTML = shell(`<div class="card"><h2>Backup</h2>
    <p class="muted">A copy of the data directory: users, environments, settings, stack files, keys and certificates. With a password it is encrypted (AES-256-GCM).</p>
    <form id="bf"><label for="bp">Password (recommended)</label><input id="bp" type="password" autocomplete="new-password">
    <div class="error" role="alert"></div><button class="primary">Download backup</button></form>
    ${restoreFormHtml()}</div>`);
  bindShell();
  const bf = document.getElementById('bf');
  bf.onsubmit = async e => { e.preventDefault();
    let r;
    try { r = await request('POST', '/api/backup', {body: {password: bf.bp.value}}); } catch (err) { return formError(bf, {message: err.message}); }
    const name = (r.headers.get('Content-Disposition') || '').match(/filename="([^"]+)"/);
    const a = document.createElement('a'); a.href = URL.createObjectURL(await r.blob()); a.download = name ? name[1] : 'portainer-backup.tar.gz';
    document.body.appendChild(a); a.click(); a.remove(); formError(bf, {message: 'Backup downloaded.'}); };
  const rf = document.getElementById('rf');
  rf.onsubmit = async e => { e.preventDefault(); if (!confirm('Replace all of this server\'s data with the backup?')) return;
    try { await restoreForm(rf, () => formError(rf, {message: 'Restored. Log in again if your session ends.'})); } catch (err) { formError(rf, err); } };
}
export async function pageRestoreFresh() {
  $app.innerHTML = `<div class="card auth"><h2>Restore this new server from a backup</h2>${restoreFormHtml()}<p><a href="#/home">Create an administrator instead</a></p></div>`;
  const rf = document.getElementById('rf');
  rf.onsubmit = async e => { e.preventDefault();
    try { await restoreForm(rf, () => { location.hash = '#/login'; route(); }); } catch (err) { formError(rf, err); } };
}
