// Complaint evidence: every decision for one recipient in a time window, each with the consent change it relied on
// (taken from the evidence ledger by seq), as JSON or as a printable one-page HTML report. The decisions of checks,
// messages and scrub jobs are in one table, found by one index (brand, type, normalised recipient, time): a scrub
// decision says which job took it (`source` scrub, `jobId`).

import type { ConsentType } from '../domain/vocabulary.js'
import type { Pool } from '../store/pg.js'
import { TR_INTERVAL_SQL as TR } from '../domain/time.js'

export interface EvidenceQuery {
  brandCode: string
  type: ConsentType
  recipientType: string | null
  recipient: string
  from: Date
  to: Date
}

export interface EvidenceEntry {
  decidedAt: string
  source: string
  recipientType: string
  commercial: boolean
  allowed: boolean
  reason: string
  messageId: string | null
  upstreamStatus: string | null
  carrierId: string | null
  /** the scrub job that took the decision (source `scrub`); null for checks and messages */
  jobId: string | null
  consent: { seq: number, status: string, source: string, consentDate: string, transactionId: string | null, via: string, receivedAt: string } | null
}


export async function findEvidence (pool: Pool, q: EvidenceQuery): Promise<EvidenceEntry[]> {
  const { rows } = await pool.query(
    `SELECT to_char(d.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "decidedAt", d.source, d.recipient_type AS "recipientType",
            d.commercial, d.allowed, d.reason, d.message_id AS "messageId", d.upstream_status AS "upstreamStatus", d.carrier_id AS "carrierId", d.job_id AS "jobId",
            h.seq::float8 AS seq, h.status, h.source AS "consentSource",
            to_char(h.consent_date AT TIME ZONE ${TR}, 'YYYY-MM-DD HH24:MI:SS') AS "consentDate", h.transaction_id AS "transactionId", h.via,
            to_char(h.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "receivedAt"
     FROM decisions d
     LEFT JOIN consent_history h ON h.seq = d.consent_seq
     WHERE d.brand_code = $1 AND d.type = $2 AND d.normalized = $3 AND d.decided_at >= $4 AND d.decided_at < $5
       AND ($6::text IS NULL OR d.recipient_type = $6)
     ORDER BY d.decided_at`,
    [q.brandCode, q.type, q.recipient, q.from, q.to, q.recipientType])
  return rows.map(r => ({
    decidedAt: r.decidedAt,
    source: r.source,
    recipientType: r.recipientType,
    commercial: r.commercial,
    allowed: r.allowed,
    reason: r.reason,
    messageId: r.messageId,
    upstreamStatus: r.upstreamStatus,
    carrierId: r.carrierId,
    jobId: r.jobId,
    consent: r.seq === null ? null : { seq: r.seq, status: r.status, source: r.consentSource, consentDate: r.consentDate, transactionId: r.transactionId, via: r.via, receivedAt: r.receivedAt }
  }))
}

/** The report's word for each front end: a send, a check, a bulk scrub (with its job below it). */
const SOURCE_TR: Readonly<Record<string, string>> = { messages: 'gönderim', check: 'sorgu', scrub: 'toplu tarama' }

const esc = (s: unknown): string => String(s ?? '').replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`)

const trTime = (iso: string): string => new Date(Date.parse(iso) + 3 * 3_600_000).toISOString().replace('T', ' ').slice(0, 19)

/** A printable one-page report a compliance officer can attach to an answer to the Ministry. */
export function evidenceHtml (q: EvidenceQuery, entries: EvidenceEntry[], generatedAt: Date): string {
  const rows = entries.map(e => `<tr>
<td>${esc(trTime(e.decidedAt))}</td><td>${esc(SOURCE_TR[e.source] ?? e.source)}${e.messageId !== null ? '<br><small>' + esc(e.messageId) + '</small>' : ''}${e.jobId !== null ? '<br><small>iş ' + esc(e.jobId) + '</small>' : ''}</td>
<td>${e.commercial ? 'ticari' : 'bilgilendirme'}</td><td class="${e.allowed ? 'ok' : 'no'}">${e.allowed ? 'izin verildi' : 'engellendi'}<br><small>${esc(e.reason)}</small></td>
<td>${e.consent === null ? '—' : `${esc(e.consent.status)} · ${esc(e.consent.source)}<br>${esc(e.consent.consentDate)}<br><small>${esc(e.consent.transactionId ?? '')}</small>`}</td>
<td>${esc(e.upstreamStatus ?? '—')}${e.carrierId !== null ? '<br><small>' + esc(e.carrierId) + '</small>' : ''}</td></tr>`).join('\n')
  return `<!doctype html>
<html lang="tr"><head><meta charset="utf-8"><title>İleti izin kanıtı — ${esc(q.recipient)}</title>
<style>
 @page { size: A4 landscape; margin: 12mm } body { font: 11px/1.4 system-ui, sans-serif; color: #111 }
 h1 { font-size: 16px; margin: 0 0 4px } table { border-collapse: collapse; width: 100% } th, td { border: 1px solid #999; padding: 3px 5px; vertical-align: top; text-align: left }
 th { background: #eee } .ok { color: #065f2c } .no { color: #8b0000 } small { color: #555; word-break: break-all } dl { display: grid; grid-template-columns: max-content auto; gap: 2px 10px; margin: 6px 0 10px }
</style></head><body>
<h1>Ticari elektronik ileti izin kanıtı / Consent evidence</h1>
<dl><dt>Alıcı</dt><dd>${esc(q.recipient)}</dd><dt>Marka kodu</dt><dd>${esc(q.brandCode)}</dd><dt>Kanal</dt><dd>${esc(q.type)}${q.recipientType !== null ? ' · ' + esc(q.recipientType) : ''}</dd>
<dt>Dönem</dt><dd>${esc(trTime(q.from.toISOString()))} — ${esc(trTime(q.to.toISOString()))} (Türkiye saati)</dd><dt>Kayıt sayısı</dt><dd>${entries.length}</dd></dl>
<table><thead><tr><th>Karar zamanı</th><th>İşlem</th><th>İleti türü</th><th>Karar</th><th>Dayanak izin kaydı (durum · kaynak, tarih, transactionId)</th><th>Operatör sonucu</th></tr></thead>
<tbody>
${rows === '' ? '<tr><td colspan="6">Bu dönemde kayıt yok.</td></tr>' : rows}
</tbody></table>
<p><small>Oluşturulma: ${esc(trTime(generatedAt.toISOString()))} (Türkiye saati). Kararlar iys-gateway karar kaydından, dayanak izin kayıtları İYS uyumlu izin geçmişinden (evidence ledger) alınmıştır.</small></p>
</body></html>
`
}
