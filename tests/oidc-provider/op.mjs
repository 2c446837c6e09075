// The OpenID provider test_oidc.py signs in through: the certified `oidc-provider`, configured by the test.
// Usage: node op.mjs CONFIG.json, where the JSON gives {issuer, port, clients, jwks, accounts, clockOffsetSeconds,
// idTokenSeconds}. clockOffsetSeconds sets this provider's clock behind (a host with a wrong clock): with ID tokens
// living idTokenSeconds, fewer than the offset, they are expired when they are issued.
import {readFileSync} from 'node:fs';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
if (config.clockOffsetSeconds) {
  const realNow = Date.now;
  Date.now = () => realNow() - config.clockOffsetSeconds * 1000;
}
const {default: Provider} = await import('oidc-provider');

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  claims: {openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'],
    groups: ['groups']},
  scopes: ['openid', 'email', 'profile', 'groups'],
  pkce: {required: () => true},
  ...(config.idTokenSeconds ? {ttl: {IdToken: config.idTokenSeconds}} : {}),
  features: {devInteractions: {enabled: true}, rpInitiatedLogout: {enabled: true}},
  async findAccount(ctx, id) {
    const claims = config.accounts[id];
    if (!claims) return undefined;
    return {accountId: id, async claims() { return {sub: id, ...claims}; }};
  },
});
provider.proxy = false;
provider.listen(config.port, '127.0.0.1', () => console.log(`listening ${config.issuer}`));
