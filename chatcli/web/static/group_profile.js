// The group's profile in the page: its name, description and picture in the
// chat header, and a settings dialog where admins change them. Everything is
// a JSON-RPC call (groups.info, groups.set) to the daemon, which sends the
// change to every member encrypted end to end.
import { fillAvatar } from "./render.js";

const PICTURE_SIZE = 128; // the group picture travels inline: at most 32 KiB

// `currentGroup()` is the name of the group open in the page, or null.
export function setupGroupProfile({ rpc, $, upload, resizedImage, errorText, pictureUrl, setPicture, currentGroup }) {
  let pictureBlob = null;
  let clearPicture = false;
  let group = null;

  const isCurrent = (name) => currentGroup() === name;

  function showPicture(node, title, info) {
    fillAvatar(node, title);
    node.style.backgroundImage = "";
    if (info && info.avatar) setPicture(node, pictureUrl(info.avatar));
  }

  // The chat header of an open group: its profile's name, then the local
  // name (when they differ) or the description under it.
  async function showHeader(name) {
    let info;
    try {
      info = await rpc.call("groups.info", { group: name, avatar: true });
    } catch {
      return;
    }
    if (!info || !isCurrent(name)) return;
    $("chat-name").textContent = info.title || name;
    const notes = [];
    if (info.title && info.title !== name) notes.push(`here: ${name}`);
    if (info.description) notes.push(info.description);
    $("chat-presence").textContent = notes.join(" · ");
    showPicture($("chat-avatar"), info.title || name, info);
    $("open-group-settings").hidden = false;
  }

  async function openSettings(name) {
    group = name;
    pictureBlob = null;
    clearPicture = false;
    $("group-settings-error").textContent = "";
    $("group-settings-file").value = "";
    let info;
    try {
      info = await rpc.call("groups.info", { group: name, avatar: true });
    } catch (error) {
      $("group-settings-error").textContent = errorText(error);
      return;
    }
    $("group-settings-name").value = info.title || name;
    $("group-settings-description").value = info.description || "";
    showPicture($("group-settings-avatar"), info.title || name, info);
    const admins = info.admins.length ? info.admins.join(", ") : "none";
    $("group-settings-admins").textContent =
      `${info.members} members · created by ${info.creator} · admins: ${admins}` +
      (info.is_admin ? "" : " · only admins can change the profile");
    for (const id of ["group-settings-name", "group-settings-description", "group-settings-file",
      "group-settings-clear", "group-settings-save"]) {
      $(id).disabled = !info.is_admin;
    }
    $("group-settings-dialog").showModal();
  }

  $("group-settings-file").addEventListener("change", async () => {
    const file = $("group-settings-file").files[0];
    $("group-settings-error").textContent = "";
    if (!file) return;
    try {
      pictureBlob = await resizedImage(file, PICTURE_SIZE);
      clearPicture = false;
      const preview = $("group-settings-avatar");
      preview.textContent = "";
      preview.style.backgroundImage = `url("${URL.createObjectURL(pictureBlob)}")`;
    } catch {
      pictureBlob = null;
      $("group-settings-error").textContent = "That file is not an image this browser can read.";
    }
  });

  $("group-settings-clear").addEventListener("click", () => {
    pictureBlob = null;
    clearPicture = true;
    fillAvatar($("group-settings-avatar"), $("group-settings-name").value || group || "?");
    $("group-settings-avatar").style.backgroundImage = "";
  });

  $("group-settings-form").addEventListener("submit", async (event) => {
    if (event.submitter && event.submitter.value !== "save") return;
    event.preventDefault();
    try {
      const params = {
        group,
        name: $("group-settings-name").value.trim(),
        description: $("group-settings-description").value,
        clear_avatar: clearPicture,
      };
      if (pictureBlob) {
        const uploaded = await upload(new File([pictureBlob], "group.jpg", { type: "image/jpeg" }));
        params.avatar = uploaded.path;
      }
      await rpc.call("groups.set", params);
      $("group-settings-dialog").close();
      if (isCurrent(group)) await showHeader(group);
    } catch (error) {
      $("group-settings-error").textContent = errorText(error);
    }
  });

  $("open-group-settings").addEventListener("click", () => {
    const name = currentGroup();
    if (name !== null) openSettings(name);
  });

  return { showHeader };
}
