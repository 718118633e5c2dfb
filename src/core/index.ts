/**
 * The domain core: everything about accounts, keys, orgs and billing is decided here. It knows
 * nothing of HTTP or SSH; the doors parse, call these, and format.
 */
export { AppError, ERRORS, toAppError, unavailableFields, type ErrorCode } from './errors.js';
export type {
  CoreDeps,
  CoreSettings,
  Mailer,
  VerificationMail,
  VerificationFacts,
  BillingCheck,
  RequestOrigin,
  CoreEvents,
  RateLimitName,
  BillingCheckResult,
  ApiKeyLookupSource,
} from './context.js';
export { queueNotice, wakeMailSender, sshCommandOf, NOTICE_GIVE_UP_MS, type Notice, type NoticeKey, type NoticeMail, type RevocationNoticeReason } from './notices.js';
export { queueDueExpiryNotices, nextExpiryNoticeAt, startExpiryNotices, countKeysExpiringSoon, expiryThresholdsOf, EXPIRING_SOON_MS, EXPIRY_SCAN_BATCH, EXPIRY_IDLE_MS, sweepExpiryNotices, EXPIRY_NOTICES_KEPT_MS, type ExpiryNoticeLoop } from './expiry-notices.js';
export { DEFAULT_KEY_PERMISSIONS, DEFAULT_KEY_EXPIRY_NOTICES_MS, keyPermissionsOf, type KeyPermission } from './context.js';
export { PERMISSIONS, PERMISSION_NAMES, VERIFICATION_LINK_TTL_MS, NO_EVENTS, RATE_LIMIT_NAMES, BILLING_CHECK_RESULTS, API_KEY_LOOKUP_SOURCES, eventsOf, nowOf, addressGroupIn, CONFIRMATIONS_CHANNEL, type ConfirmationSignals } from './context.js';
export { orgsOfUser, findUserByEmail, type OrgMembership } from './accounts.js';
export {
  startVerification,
  inspectVerificationLink,
  confirmVerificationLink,
  cancelVerificationLink,
  confirmationGrantOf,
  type ConfirmationGrant,
  verificationFactsOf,
  waitForConfirmation,
  LINK_STATE_ERRORS,
  type LinkState,
} from './verification.js';
export {
  resolveSshIdentity,
  recordKeySeen,
  httpKeyStatus,
  findTrustedHolder,
  proveBinding,
  type Identity,
  type AccountIdentity,
  type AnonymousIdentity,
  type SshIdentityRow,
} from './identity.js';
export type { HttpTrustWindow, HttpTrustPolicy } from './trust.js';
export { takeFromBudget, budgetSpent, sweepBudgets, type Budget } from './budgets.js';
export { deliverNextMail, isPermanentMailFailure, outboxBacklog, sweepOutbox, SEND_TIMEOUT_MS, retryDelayMs, startMailSender, FIRST_RETRY_MS, MAX_RETRY_MS, SEND_LEASE_MS, type DeliveryOutcome, type MailSender } from './mail-outbox.js';
export { CHALLENGE_KEEP_MS, CHALLENGE_TTL_MS, CHALLENGES_PER_KEY, challengeMessage, issueChallenge, proofNamespace, redeemProof, sweepChallenges, type Challenge, type Proof } from './proof.js';
export { MAX_ARMORED_LENGTH, verifySshsig, type SshsigCheck, type SshsigFailure } from './sshsig.js';
export {
  counterRegressed,
  parseSkSignatureField,
  parseSkSignatureFromSsh2,
  SK_USER_PRESENT,
  SK_USER_VERIFIED,
  verifySkSignature,
  type SkFlagsPolicy,
} from './security-keys.js';
export { recordSecurityKeyCounter } from './security-key-counter.js';
export { mintApiKey, mintApiKeyOverHttp, listApiKeys, listAllApiKeys, revocableKeyIds, revokeApiKey, revokeKeysIn, forgetRevoked, type RevocationReason, authenticateApiKey, type AuthenticatedApiKey, apiKeyState, SHORT_KEY_ID_LENGTH, type ApiKeySummary, type ApiKeyState } from './api-keys.js';
export { keyPermissionsFor, MIN_KEY_TTL_MS, type MintProof } from './api-keys.js';
export { findKeyBySecret, insertKey, type NewApiKey } from './api-keys.js';
export { describeIssues } from './validation.js';
export { revokeKeyAsHolder, reportLeakedKeys, LEAK_REPORT_MEMORY_MS, MAX_LEAK_MATCHES, type LeakMatch, type LeakLabel, type LeakReport } from './leaked-keys.js';
export { rotateApiKey, rotateApiKeyAsHolder, undoUndeliveredRotation, RotationOverlapSchema, DEFAULT_ROTATION_OVERLAP_MS, MAX_ROTATION_OVERLAP_MS, type RotatedApiKey } from './rotation.js';
export { createOrg, setMember, listOrgs, setBilling } from './orgs-admin.js';
export { removeMember, type RemovedMember } from './orgs-admin.js';
export { auditEventsOf, allAuditEvents, AuditSinceSchema, AuditLimitSchema, AUDIT_DEFAULT_SINCE_MS, AUDIT_MAX_SINCE_MS, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT, type AuditEntry, type AuditQuery } from './audit-log.js';
export { subscriptionBilling, httpBilling } from './billing.js';
export { createSshIdentityCache, SSH_IDENTITY_CHANGED, watchIdentityWrites, writesIdentityTable, type SshIdentityCache } from './ssh-identity-cache.js';
export { API_KEY_REVOCATIONS_CHANNEL, createApiKeyCache, type ApiKeyCache, type ApiKeyRecord, type RevocationSignals } from './api-key-cache.js';
export { parseDuration, formatDuration, formatLifetime } from './duration.js';
export { EmailSchema } from './emails.js';
export { PublicKeyLineSchema, LabelSchema, OrgNameSchema, OrgNameLookupSchema, NoteSchema, parseInput } from './validation.js';
export { parsePublicKeyLine, parsePublicKeyBlob, fingerprintOf, formatPublicKey, describeKeyType, isSecurityKeyType, type PublicKey } from './ssh-public-key.js';
export { parseApiKey, generateApiKey } from './secrets.js';
export {
  readOrgPolicy,
  setOrgPolicy,
  settingText,
  maxTtlIn,
  POLICY_SETTINGS,
  PolicySettingSchema,
  type OrgPolicyView,
  type PolicySetting,
  type PolicyChangeResult,
} from './org-policy.js';
export { DEFAULT_ORG_POLICY, type OrgPolicy } from './org-policy-row.js';
