// Glyphs: a many-class image set built from Debian's font packages, for few-shot learning the way
// Omniglot is used (MAML Sec. 5.2: 1623 characters drawn by 20 people). Here each character is a
// class and each font face a "drawer": the Latin letters and digits, the Greek and the basic
// Cyrillic alphabets (174 characters), rendered by FreeType from every face in the given folders
// that has all of them (70 faces from fonts-dejavu-core, fonts-dejavu-extra, fonts-liberation and
// fonts-urw-base35: sans, serif, mono, condensed, italic, bold, a script). A character whose
// images are the same as an earlier character's in at least half of the faces (Latin A, Greek
// Alpha and Cyrillic A share one outline in most fonts) is dropped, so no two classes are the same
// picture. Faces are read in strcmp order of folder list then file name, so a machine with the
// same packages gives the same bits.
//
// Rendering: FreeType's 8-bit anti-aliased rasterizer without hinting (the outline as drawn, not
// snapped to the grid per font), at 5/7 of the side per em (20 pixels on 28), on a baseline at
// 3/4 of the side (row 21 of 28), centred horizontally on the glyph's bitmap; ink is 255 and the
// background 0, as in MNIST; a pixel outside the square is cut off.
#include "data.h"
#include "listing.h"

#include <ft2build.h>
#include FT_FREETYPE_H

#include <stdlib.h>
#include <string.h>

// The candidate characters: A-Z, a-z, 0-9, Greek capitals and small letters (without the reserved
// U+03A2 and the final sigma U+03C2), Cyrillic U+0410-U+044F. Returns their number.
static int candidates(uint32_t *cp) {
    static const uint32_t ranges[][2] = {{'A', 'Z'}, {'a', 'z'}, {'0', '9'}, {0x391, 0x3A9}, {0x3B1, 0x3C9},
                                         {0x410, 0x44F}};
    int n = 0;
    for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++)
        for (uint32_t c = ranges[r][0]; c <= ranges[r][1]; c++)
            if (c != 0x3A2 && c != 0x3C2) cp[n++] = c;
    return n;
}
enum { MAX_CANDIDATES = 256 };

// The font files (.ttf, .otf) of the folders in the colon-separated list, each folder sorted.
static int list_fonts(const char *fonts, mdl_names *out, char *err, size_t errlen) {
    static const char *const ext[] = {".ttf", ".otf", NULL};
    *out = (mdl_names){0};
    char *list = strdup(fonts);
    if (!list) return mdl_fail(err, errlen, "glyphs: out of memory");
    int rc = 0;
    for (char *save = NULL, *dir = strtok_r(list, ":", &save); !rc && dir; dir = strtok_r(NULL, ":", &save)) {
        mdl_names files;
        if (mdl_list_dir(dir, 0, ext, "font files (.ttf or .otf)", &files, err, errlen)) rc = -1;
        for (int i = 0; !rc && i < files.n; i++)
            if (mdl_names_push(out, "", files.v[i])) rc = mdl_fail(err, errlen, "glyphs: out of memory");
        mdl_names_free(&files);
    }
    free(list);
    if (!rc && !out->n) rc = mdl_fail(err, errlen, "glyphs: no font folders in \"%s\"", fonts);
    if (rc) mdl_names_free(out);
    return rc;
}

// Character cp of face into img [side, side] (zeroed first). 0, or a FreeType error code.
static int render(FT_Face face, uint32_t cp, int side, uint8_t *img) {
    memset(img, 0, (size_t)side * side);
    int err = FT_Load_Char(face, cp, FT_LOAD_RENDER | FT_LOAD_NO_HINTING);
    if (err) return err;
    const FT_Bitmap *b = &face->glyph->bitmap;
    if (b->pixel_mode != FT_PIXEL_MODE_GRAY) return FT_Err_Invalid_Pixel_Size;
    int top = side * 3 / 4 - face->glyph->bitmap_top, left = (side - (int)b->width) / 2;
    for (int r = 0; r < (int)b->rows; r++) {
        const uint8_t *src = b->buffer + (ptrdiff_t)r * b->pitch;
        for (int c = 0; c < (int)b->width; c++) {
            int i = top + r, j = left + c;
            if (i >= 0 && i < side && j >= 0 && j < side) img[i * side + j] = src[c];
        }
    }
    return 0;
}

// Renders every candidate of every face that has them all into pix [faces, n_cp, side^2]
// (grown as faces are kept); *kept faces.
static int render_all(FT_Library lib, const mdl_names *files, const uint32_t *cp, int n_cp, int side,
                      uint8_t **pix, int *kept, char *err, size_t errlen) {
    size_t per = (size_t)n_cp * side * side;
    *pix = NULL, *kept = 0;
    for (int f = 0; f < files->n; f++) {
        FT_Face face;
        int e = FT_New_Face(lib, files->v[f], 0, &face);
        if (e) return mdl_fail(err, errlen, "%s: not a font FreeType reads (error %d)", files->v[f], e);
        int has_all = !FT_Set_Pixel_Sizes(face, 0, (FT_UInt)(side * 5 / 7));
        for (int k = 0; has_all && k < n_cp; k++) has_all = FT_Get_Char_Index(face, cp[k]) != 0;
        if (has_all) {
            uint8_t *grown = realloc(*pix, per * (size_t)(*kept + 1));
            if (!grown) e = -1;
            else *pix = grown;
        }
        for (int k = 0; has_all && !e && k < n_cp; k++)
            if ((e = render(face, cp[k], side, *pix + per * (size_t)*kept + (size_t)k * side * side)))
                mdl_fail(err, errlen, "%s: character U+%04X could not be rendered (error %d)", files->v[f],
                         (unsigned)cp[k], e);
        FT_Done_Face(face);
        if (e == -1) return mdl_fail(err, errlen, "glyphs: out of memory");
        if (e) return -1;
        *kept += has_all;
    }
    return 0;
}

// keep [n_cp]: 0 for a character whose image equals a kept earlier one's in at least half the faces.
static void drop_same(const uint8_t *pix, int faces, int n_cp, int side, int *keep) {
    size_t d = (size_t)side * side, per = (size_t)n_cp * d;
    for (int k = 0; k < n_cp; k++) {
        keep[k] = 1;
        for (int j = 0; keep[k] && j < k; j++) {
            if (!keep[j]) continue;
            int same = 0;
            for (int f = 0; f < faces; f++) same += !memcmp(pix + f * per + k * d, pix + f * per + j * d, d);
            if (2 * same >= faces) keep[k] = 0;
        }
    }
}

int mdl_glyphs_load(const char *fonts, int side, mdl_dataset *out, uint32_t *codepoints, int32_t *n_faces_out,
                    char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (n_faces_out) *n_faces_out = 0;
    if (side < 8 || side > 512) return mdl_fail(err, errlen, "glyphs: bad image side %d (8 to 512)", side);
    mdl_names files;
    if (list_fonts(fonts, &files, err, errlen)) return -1;
    FT_Library lib;
    if (FT_Init_FreeType(&lib)) {
        mdl_names_free(&files);
        return mdl_fail(err, errlen, "glyphs: FreeType could not start");
    }
    uint32_t cp[MAX_CANDIDATES];
    int n_cp = candidates(cp), faces, keep[MAX_CANDIDATES], classes = 0;
    uint8_t *pix;
    int rc = render_all(lib, &files, cp, n_cp, side, &pix, &faces, err, errlen);
    FT_Done_FreeType(lib);
    if (!rc && !faces)
        rc = mdl_fail(err, errlen, "glyphs: no font in \"%s\" has all %d characters (Latin, digits, Greek, "
                      "Cyrillic)", fonts, n_cp);
    if (!rc) {
        drop_same(pix, faces, n_cp, side, keep);
        for (int k = 0; k < n_cp; k++) classes += keep[k];
        if (mdl_dataset_alloc(out, classes * faces, side * side, classes))
            rc = mdl_fail(err, errlen, "glyphs: out of memory for %d images", classes * faces);
    }
    size_t d = (size_t)side * side;
    for (int k = 0, c = 0; !rc && k < n_cp; k++) { // class c's faces, in face order
        if (!keep[k]) continue;
        if (codepoints) codepoints[c] = cp[k];
        for (int f = 0; f < faces; f++) {
            size_t i = (size_t)c * faces + f;
            memcpy((uint8_t *)out->Xc.codes + i * d, pix + ((size_t)f * n_cp + k) * d, d);
            out->y[i] = c;
        }
        c++;
    }
    if (!rc) mdl_dataset_decode(out);
    if (!rc && n_faces_out) *n_faces_out = faces;
    free(pix);
    mdl_names_free(&files);
    return rc;
}
