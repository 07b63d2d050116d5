/** The file name a response's Content-Disposition gives, else `fallback`. */
export function attachmentName(disposition: string | null, fallback: string): string {
  return /filename="?([^";]+)"?/.exec(disposition ?? "")?.[1] ?? fallback;
}

/** Save an API response (fetched with the session, so not a plain link) as a file. */
export async function saveResponse(response: Response, fallbackName: string): Promise<void> {
  const name = attachmentName(response.headers.get("Content-Disposition"), fallbackName);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
