// openid-client, unchanged, against a real authsvc (run by tests/test_openid_client.py).
//
// A first-party app logs in through POST /v1/auth/login, then, with openid-client only:
// discovery (RFC 8414 metadata), introspection as a gateway (client_secret_basic, whose
// secret openid-client form-urlencodes: `gw-secret` goes as `gw%2Dsecret`), a refresh
// (refresh_token grant, public client), and a revocation. Prints one JSON object on
// stdout: what each step saw. Exits 1, with the error as JSON, when a step throws.
//
// Environment: AUTHSVC_URL (the issuer), GATEWAY_ID, GATEWAY_SECRET, APP_CLIENT_ID,
// APP_USERNAME, APP_PASSWORD.

import * as client from 'openid-client'

const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set`)
  return value
}

const issuer = new URL(env('AUTHSVC_URL'))
// The test server is http on loopback: openid-client wants https unless told otherwise.
// authsvc publishes OAuth 2.0 metadata (RFC 8414), not OpenID Connect discovery.
const options = { algorithm: 'oauth2', execute: [client.allowInsecureRequests] }

async function login () {
  const response = await fetch(new URL('/v1/auth/login', issuer), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: env('APP_USERNAME'), password: env('APP_PASSWORD') })
  })
  if (response.status !== 200) throw new Error(`login: ${response.status} ${await response.text()}`)
  return response.json()
}

// What an error thrown by openid-client says, for the test to assert on.
async function described (error) {
  const response = error.response
  let body = null
  if (response && !response.bodyUsed) {
    body = await response.clone().json().catch(() => null)
  }
  return {
    name: error.name,
    code: error.code,
    status: error.status ?? response?.status,
    error: error.error,
    error_description: error.error_description,
    // WWWAuthenticateChallengeError: the parsed challenges, as [{scheme, parameters}].
    challenges: Array.isArray(error.cause) ? error.cause : null,
    www_authenticate: response?.headers.get('www-authenticate') ?? null,
    body,
    message: error.message
  }
}

async function refused (step) {
  try {
    await step()
    return null
  } catch (error) {
    return described(error)
  }
}

const introspected = ({ active, sub, sid, client_id: clientId, token_type: tokenType }) =>
  ({ active, sub, sid, client_id: clientId, token_type: tokenType })

async function main () {
  const started = performance.now()
  const result = {}

  // A gateway: an introspection client. Without ClientSecretBasic openid-client would
  // send the secret in the body (client_secret_post), which introspection does not take.
  const gatewaySecret = env('GATEWAY_SECRET')
  const gateway = await client.discovery(
    issuer, env('GATEWAY_ID'), gatewaySecret, client.ClientSecretBasic(), options
  )
  // A first-party app: a public client, as token_endpoint_auth_methods_supported says.
  const app = await client.discovery(issuer, env('APP_CLIENT_ID'), undefined, client.None(), options)
  result.metadata = gateway.serverMetadata()

  const pair = await login()
  result.login = { session_id: pair.session_id }

  result.introspection = introspected(await client.tokenIntrospection(gateway, pair.access_token))

  const wrong = await client.discovery(
    issuer, env('GATEWAY_ID'), `${gatewaySecret}x`, client.ClientSecretBasic(), options
  )
  result.wrong_secret = await refused(() => client.tokenIntrospection(wrong, pair.access_token))

  const refreshed = await client.refreshTokenGrant(app, pair.refresh_token)
  result.refresh = {
    token_type: refreshed.token_type,
    expires_in: refreshed.expiresIn(),
    new_refresh_token: refreshed.refresh_token !== pair.refresh_token,
    session_id: refreshed.session_id,
    introspection: introspected(await client.tokenIntrospection(gateway, refreshed.access_token))
  }

  await client.tokenRevocation(app, refreshed.refresh_token, { token_type_hint: 'refresh_token' })
  result.revocation = {
    introspection: introspected(await client.tokenIntrospection(gateway, refreshed.access_token)),
    refresh_again: await refused(() => client.refreshTokenGrant(app, refreshed.refresh_token))
  }

  result.elapsed_ms = Math.round(performance.now() - started)
  return result
}

main().then(
  (result) => { process.stdout.write(JSON.stringify(result) + '\n') },
  async (error) => {
    const failed = await described(error)
    process.stdout.write(JSON.stringify({ failed, cause: String(error.cause ?? '') }) + '\n')
    process.exitCode = 1
  }
)
